from consumers.training import main

main()
