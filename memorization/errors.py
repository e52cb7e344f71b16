"""The one exception type for bad user input: the entry point prints its message as one line."""


class ConfigError(ValueError):
    """A config value, file or shape that cannot work; the message says what to change."""


def check_all(checks) -> None:
    """Raise a ConfigError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names where, in one line."""


def root_error(exc: BaseException) -> BaseException:
    """The error to report: a ConfigError wherever it is in the chain (Hydra wraps errors
    raised while instantiating), else ``exc`` itself."""
    cur = exc
    while cur is not None:
        if isinstance(cur, ConfigError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return exc


def first_line(exc: BaseException) -> str:
    """One line for a job's error: the message of ours, type and message of anything else."""
    while type(exc).__name__ == "InstantiationException" and exc.__cause__ is not None:
        exc = exc.__cause__  # Hydra's wrapper says only which target failed
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (ConfigError, TrainingDiverged)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
