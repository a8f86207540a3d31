from nextai.main import main

main()
