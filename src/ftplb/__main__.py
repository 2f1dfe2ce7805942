"""``python -m ftplb``."""

import sys

from ftplb.cli import main

sys.exit(main())
