"""`python -m notifyctl.cli`."""

from notifyctl.cli.startup import main

main()
