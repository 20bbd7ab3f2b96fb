from ghaf.cli.main import main

main()
