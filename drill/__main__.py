"""python -m drill: see drill/cli.py and the docs/operations.md, "Failover drill"."""

import sys

from drill.cli import main

sys.exit(main())
