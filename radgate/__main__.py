from radgate.cli import main

main()
