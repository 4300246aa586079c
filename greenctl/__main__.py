from greenctl.cli import main

main()
