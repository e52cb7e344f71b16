"""The one exception type for bad user input: the entry point prints its message as one line."""


class ConfigError(ValueError):
    """A config value, file or shape that cannot work; the message says what to change."""
