from ledgerline.cli import main

main()
