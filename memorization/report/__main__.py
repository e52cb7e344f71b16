"""``python -m memorization.report SWEEP_DIR [SWEEP_DIR …]`` (memorization/report/__init__.py)."""

import sys

from memorization.report import main

sys.exit(main())
