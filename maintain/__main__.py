"""python -m maintain: see maintain/cli.py and docs/operations.md, "Node maintenance"."""

import sys

from maintain.cli import main

sys.exit(main())
