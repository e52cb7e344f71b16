"""Hydra override strings read back: what a command, or a sweep's ``multirun.yaml``, set and
swept. A part: it imports Hydra's parser and yaml only (the report, the help and the W&B run
names use it)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def override_items(overrides: list[str]) -> list[tuple[str, str, bool]]:
    """(key, value text, is a sweep) of Hydra override strings, e.g. ``noise.p=0,0.2``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    items = []
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except Exception:  # an override Hydra would not parse today: keep its text
            key, _, value = text.partition("=")
            items.append((key.lstrip("+~"), value, "," in value))
            continue
        items.append((o.key_or_group, o.get_value_element_as_str()
                      if not o.is_sweep_override() else text.partition("=")[2],
                      o.is_sweep_override()))
    return items


def unparsable(overrides: list[str]) -> str | None:
    """The first of ``overrides`` (``key=value`` arguments) that Hydra's grammar does not
    parse, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        if "=" not in text or text.startswith("-"):
            continue
        try:
            parser.parse_override(text)
        except Exception:
            return text
    return None


def sweep_overrides(sweep_dir: str | os.PathLike) -> list[str]:
    """The keys a multirun swept, from the ``multirun.yaml`` Hydra writes in its folder
    (e.g. ``noise.p`` for ``-m noise.p=0,0.2``); [] without one."""
    path = Path(sweep_dir) / "multirun.yaml"
    multirun = yaml.safe_load(path.read_text()) if path.is_file() else None
    multirun = multirun if isinstance(multirun, dict) else {}
    task = (((multirun.get("hydra") or {}).get("overrides") or {}).get("task")) or []
    return [k for k, _, sweep in override_items([str(t) for t in task]) if sweep]


def job_overrides(folder: str | os.PathLike) -> list[str]:
    """The overrides Hydra recorded for the job in ``folder`` (its ``.hydra/overrides.yaml``);
    [] without one, or when it is unreadable or not a list."""
    path = Path(folder) / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(o) for o in items] if isinstance(items, list) else []
