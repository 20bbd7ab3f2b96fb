"""The secure artifact store: content-addressed, encrypted, residency-checked blobs."""
