"""`python -m notifyctl.cli`."""

from notifyctl.cli.main import main

main()
