"""``python -m memorization.report SWEEP_DIR [SWEEP_DIR …]``: the sweep report
(memorization/cli/report/)."""

import sys

from memorization.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
