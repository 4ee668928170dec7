"""`python -m parley_client`: the terminal client (cli.py)."""

import sys

from parley_client.cli import main

sys.exit(main())
