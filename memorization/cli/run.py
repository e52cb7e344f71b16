"""Entry point: ``python -m memorization.run [overrides]`` (Hydra; ``-m`` for a sweep).

Only composes: the checks before Hydra (``entry.started``), Hydra's composition of the config,
then the job (``jobs.train.train``: the folder settled, the datamodule, model, callbacks, loggers
and trainer instantiated from the config by the engine, and the fit) under ``entry.run_job``, which
holds the folder and reports an error in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from memorization.base.launch import missing_plugin
from memorization.base.process import setup_process
from memorization.cli.entry import (
    conf_dir,
    extra_dirs,
    is_sweep,
    run_job,
    started,
    unknown_option,
)
from memorization.jobs.train import hydra_output_dir, train
from memorization.jobs.validate import validate

__all__ = ["main", "train"]


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    setup_process()  # a launcher's worker runs no main()
    run_job(cfg, hydra_output_dir(), train)


def main() -> None:
    setup_process()
    args = sys.argv[1:]
    if {"--help", "-h"} & set(args):  # every group and top-level key
        from memorization.cli.help import format_help

        err = unknown_option(args) or missing_plugin(args)
        if not err:
            try:
                print(format_help(Path(conf_dir()), args, extra_dirs(args)))
                return
            except Exception as e:  # an override Hydra cannot compose: one line, as for a run
                err = str(e).strip().splitlines()[0]
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from memorization.cli.sweep import hydra_sweep

    with started("config", validate=validate) as out:
        hydra_sweep(_hydra_main, out, is_sweep(args))


if __name__ == "__main__":
    main()
