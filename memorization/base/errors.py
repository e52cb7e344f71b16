"""The one exception type for bad user input: the entry point prints its message as one line."""

import sys


class ConfigError(ValueError):
    """A config value, file or shape that cannot work; the message says what to change."""


class Refusal(ConfigError):
    """A job that will not run in its folder (another live process holds it, or it holds a run
    with other settings): it writes nothing there, no ``FAILED`` either."""


def check_all(checks) -> None:
    """Raise a ConfigError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def check_number(value, key: str, *, integer: bool = False, lo: float | None = None,
                 hi: float | None = None, allow_none: bool = False, what: str = ""):
    """``value`` as a checked int/float: one line naming ``key`` when it is not (for configs
    built in Python too, where no schema has checked the type)."""
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        rng = (f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None
               else f" >= {lo:g}" if lo is not None else "")
        kind = "an integer" if integer else "a number"
        none = " or null" if allow_none else ""
        raise ConfigError(f"{key}={shown(value)} must be {kind}{rng}{none}{what}")
    return value


def shown(value) -> str:
    """A number as it was likely written: the schema makes ``noise.p=2`` the float 2.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_bool(value, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be true or false")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names where, in one line."""


def root_error(exc: BaseException) -> BaseException:
    """The error to report: a ConfigError wherever it is in the chain (Hydra wraps errors
    raised while instantiating), one made of a value the schema refused while composing (a
    wrong type: Hydra's own message spans several lines), else ``exc`` itself."""
    cur = exc
    while cur is not None:
        if isinstance(cur, ConfigError):
            return cur
        line = _schema_error(cur)
        if line is not None:
            return ConfigError(line)
        cur = cur.__cause__ or cur.__context__
    return exc


def _text(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _entry_point() -> str:
    """The module this process runs (``memorization.sensitivity``), for the hints; the main
    entry point when it is not one of ours (a test, a notebook)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = (getattr(spec, "name", "") or "").removesuffix(".__main__")
    return name if name.startswith("memorization.") else "memorization.run"


def _schema_error(exc: BaseException) -> str | None:
    """One line for an OmegaConf error about one key (see memorization/base/store.py), naming the
    key and the fix; None for any other error."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    key = getattr(exc, "full_key", None)
    if not isinstance(exc, OmegaConfBaseException) or not key:
        return None
    msg = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]
    value = _text(getattr(exc, "value", None))
    group = key.split(".")[0].split("[")[0]
    keys = f"its keys: python -m {_entry_point()} --cfg job --package {group}"
    if isinstance(exc, ConfigAttributeError | ConfigKeyError) and " not in " in msg:
        # the optimizer takes arguments its schema does not list (memorization/engine/optim.py)
        more = f", or pass the optimizer another argument with +{key}=..." \
            if key.startswith("optim.") else ""
        return (f"{key} is not a key of {key.rpartition('.')[0] or 'the config'}: check the "
                f"spelling ({keys}){more}")
    if "is not a ListConfig" in msg:
        return f"{key}={value} must be a list: {key}=[{value}]"
    if "is not Optional" in msg:
        return f"{key}=null is not allowed: give it a value ({keys})"
    for kind, need in (("to Integer", "an integer"), ("to Float", "a number"),
                       ("valid bool", "true or false"), ("to String", "a string")):
        if kind in msg:
            return f"{key}={value} must be {need}"
    return f"{key}: {msg}"


def first_line(exc: BaseException) -> str:
    """One line for a job's error: the message of ours, type and message of anything else."""
    while type(exc).__name__ == "InstantiationException" and exc.__cause__ is not None:
        exc = exc.__cause__  # Hydra's wrapper says only which target failed
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (ConfigError, TrainingDiverged)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
