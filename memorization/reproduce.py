"""``python -m memorization.reproduce PAPER [--scale cpu] [overrides…]``: a paper's sweeps, its
claims judged, its document written (memorization/cli/reproduce/)."""

import sys

from memorization.cli.reproduce.args import main

if __name__ == "__main__":
    sys.exit(main())
