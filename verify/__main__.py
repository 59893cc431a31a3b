"""python -m verify: see verify/cli.py and the docs/operations.md, "Verify a deployment"."""

import sys

from verify.cli import main

sys.exit(main())
