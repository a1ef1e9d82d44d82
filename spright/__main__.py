from spright.ops.cli import main

main()
