"""python -m verify: see verify/cli.py and the README's "Verify a deployment" section."""

import sys

from verify.cli import main

sys.exit(main())
