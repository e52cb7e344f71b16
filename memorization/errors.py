"""The one exception type for bad user input: the entry point prints its message as one line."""


class ConfigError(ValueError):
    """A config value, file or shape that cannot work; the message says what to change."""


def check_all(checks) -> None:
    """Raise a ConfigError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
