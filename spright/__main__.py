from spright.cli import main

main()
