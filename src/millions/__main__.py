from millions.cli import main

main()
