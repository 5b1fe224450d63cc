from registry_demo.main import main

main()
