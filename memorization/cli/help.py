"""``python -m memorization.run --help``: every config group with its options (``hydra/launcher``
too) and the top-level keys with their defaults, after the overrides given with it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# groups of Hydra's own that a user of this project picks from (the rest: --hydra-help)
HYDRA_GROUPS = ("hydra/launcher",)


def _options(conf: Path, group: str) -> list[str]:
    """Options of a group: our YAML files, and for a hydra/ group the installed plugins'."""
    ours = {p.stem for p in (conf / group).glob("*.yaml")}
    if group.startswith("hydra/"):
        from hydra.core.config_store import ConfigStore

        try:
            node = ConfigStore.instance().repo
            for part in group.split("/"):
                node = node[part]
            ours |= {name.removesuffix(".yaml") for name in node}
        except KeyError:
            pass
    return sorted(ours)


def _compose(conf: Path, overrides: list[str], config_name: str = "config") -> DictConfig:
    from memorization.jobs.catalog import compose

    return compose(config_name, overrides, conf)


def _leaves(node: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value as written) of the scalars under ``node``, without ``_target_``."""
    out = []
    for key, value in node.items():
        if key == "_target_":
            continue
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", "null" if value is None else str(value)))
    return out


def _wrapped(head: str, items: list[str], width: int = 100) -> list[str]:
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = " " * len(head)
        line += piece + " "
    return [*lines, line.rstrip()]


def compose_first_job(conf: Path, args: list[str], search: list[str] = (),
                      config_name: str = "config") -> DictConfig:
    """The config of the first job the command line would run (a sweep's first values);
    ``search``: the config folders the run adds (--config-dir and hydra.searchpath)."""
    from memorization.base.overrides import override_items

    plain = [o for o in args if "=" in o and not o.startswith("-")
             and o.partition("=")[0].lstrip("+") != "hydra.searchpath"]
    first = [f"{k}={v.split(',')[0]}" if sweep else o
             for o, (k, v, sweep) in zip(plain, override_items(plain), strict=True)]
    if search:
        first.append(f"hydra.searchpath=[{','.join(f'file://{d}' for d in search)}]")
    return _compose(conf, first, config_name)


def format_help(conf: Path, overrides: list[str], search: list[str] = ()) -> str:
    cfg = compose_first_job(conf, overrides, search)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra")
    lines = [
        "memorization: corrupt a dataset, train a network on it, log per-layer metrics.",
        "",
        "usage: python -m memorization.run [-m] [group=option ...] [key=value ...]",
        "  -m: a sweep, one job per combination (noise.p=0,0.2,0.4 seed=0,1); it ends with the",
        "      sweep report (python -m memorization.report SWEEP_DIR writes it again)",
        "",
        "config groups (group=option; the current choice marked *):",
    ]
    width = max(len(g) for g in [*groups, *HYDRA_GROUPS]) + 2
    for group in [*groups, *HYDRA_GROUPS]:
        chosen = choices.get(group)
        opts = [f"{o}*" if o == chosen else o for o in _options(conf, group)]
        lines += _wrapped(f"  {group:<{width}}", opts)
    lines += ["", "top-level keys (current values):"]
    tree = OmegaConf.to_container(cfg, resolve=False)
    top = [(k, v) for k, v in _leaves(tree) if k.split(".")[0] not in (*groups, "hydra")
           or k.startswith("module.")]
    kw = max(len(k) for k, _ in top) + 2
    lines += [f"  {k:<{kw}}{v}" for k, v in top]
    lines += [
        "",
        "a group's keys and values: python -m memorization.run [overrides] --cfg job "
        "--package <group>",
        "the whole composed config:  python -m memorization.run [overrides] --cfg job",
        "Hydra's own options:        python -m memorization.run --hydra-help",
        "no report after a sweep:    hydra.callbacks.report.enabled=false",
    ]
    return "\n".join(lines)
