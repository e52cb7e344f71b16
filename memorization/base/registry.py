"""The one registry helper: a name -> entry table that each entry fills where it is defined (a
decorator in its own file), with one-line errors for a name registered twice and for an unknown
name; and :func:`import_all`, which imports every module of a folder so that a new file
registers itself without an edit elsewhere. Data sources (memorization/data/sources.py),
corruptions (memorization/noise/base.py) and networks (memorization/models/registry.py) use it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any

from memorization.base.errors import ConfigError


class Registry(dict):
    """``what`` names an entry in the errors (``data source``); ``example`` is the override
    that picks one (``data=digits``)."""

    def __init__(self, what: str, example: str):
        super().__init__()
        self.what, self.example = what, example

    def add(self, name: str, entry: Any) -> Any:
        if name in self:
            raise ConfigError(f"{self.what} {name!r} registered twice")
        self[name] = entry
        return entry

    def register(self, name: str) -> Callable[[Any], Any]:
        """A decorator: ``@REGISTRY.register("name")`` above the entry."""
        return lambda entry: self.add(name, entry)

    def lookup(self, name: str) -> Any:
        if name not in self:
            raise ConfigError(f"unknown {self.what} {name!r}; choose one of: "
                              f"{', '.join(sorted(self))} (e.g. {self.example})")
        return self[name]


def import_all(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every module of the folder ``path`` of ``package`` (its ``__path__``), but those
    in ``skip``, so that each registers what it defines."""
    skip = set(skip)
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
