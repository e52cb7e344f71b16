"""Loggers: the per-job history file every job writes, and the W&B logger whose charts read like
the papers' figures.

Layer: parts; imports the base only.
"""

from memorization.loggers.history import HistoryLogger, parse_key, read_history

__all__ = ["HistoryLogger", "parse_key", "read_history"]
