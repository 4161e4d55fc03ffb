from heretic.cli.app import main

main()
