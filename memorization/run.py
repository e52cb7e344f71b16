"""``python -m memorization.run [overrides]``: train one job, or a sweep with ``-m``
(memorization/cli/run.py)."""

from memorization.cli.run import main

if __name__ == "__main__":
    main()
