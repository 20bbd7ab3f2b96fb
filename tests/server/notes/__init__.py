"""A sample domain, "notes", as a new domain would be written: this folder, plus one line
in the list of domains (here the test passes ``(*DOMAINS, MANIFEST)``)."""
