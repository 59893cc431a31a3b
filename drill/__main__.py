"""python -m drill: see drill/cli.py and the README's "Failover drill" section."""

import sys

from drill.cli import main

sys.exit(main())
