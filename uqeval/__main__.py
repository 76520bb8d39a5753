from uqeval.cli import main

main()
