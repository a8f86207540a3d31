from nextai.cli import main

main()
