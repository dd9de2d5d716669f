from rest_cli.cli.main import main

main()
