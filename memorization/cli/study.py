"""The command of a study (``python -m memorization.sensitivity``, ``easy_hard``, ``scores``):
its Hydra entry point (:func:`study_entry`, :func:`study_main`) and the sweep callback that
checks every job first and draws the sweep's figure at the end (:class:`StudySweep`). The study's
job itself lives in memorization/studies/.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from memorization.base.errors import first_line
from memorization.base.io import conf_dir
from memorization.base.process import setup_process
from memorization.config.studies import STUDY_KEYS
from memorization.studies.common import output_dir, study_job, validate_study


class StudySweep(Callback):
    """At the start of a ``-m`` sweep of a study, every job is composed and checked (one line,
    exit 2, before any job runs: ``check``, a function's dotted path, or by default
    :func:`validate_study` of the study's node); at its end, ``combine(sweep_dir)`` draws every
    job's curve into one figure in the sweep folder (as Arpit et al.'s Figs. 1 and 3 show real
    data, randX and randY together). ``combine``: a function's dotted path."""

    def __init__(self, combine: str, enabled: bool = True, check: str | None = None):
        self.combine, self.enabled, self.check = combine, enabled, check

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from memorization.cli.sweep import check_jobs

        key = next(k for k in STUDY_KEYS if k in config)
        check_jobs(config, hydra.utils.get_method(self.check) if self.check else
                   (lambda cfg: validate_study(cfg, key)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            made = hydra.utils.get_method(self.combine)(sweep_dir)
        except Exception as e:  # the jobs are written: say so, do not fail the sweep
            print(f"sweep figure: not drawn ({first_line(e)})", file=sys.stderr)
            return
        if made is not None:
            print(f"sweep figure: {made}", flush=True)


def study_main(run: Callable[[DictConfig], dict], config_name: str,
               job: Callable = study_job) -> Callable[[], None]:
    """The Hydra ``main`` of a study: Hydra composes conf/<config_name>.yaml and the job
    (``job(run, cfg)``, by default :func:`study_job`) runs as memorization.run's do
    (``entry.run_job``: the folder held, an error in one line and in FAILED, a bad value exits
    2, another error 1; in a sweep the other jobs go on)."""

    @hydra.main(version_base="1.3", config_path=conf_dir(), config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        setup_process()  # a launcher's worker runs no main()
        from memorization.cli.entry import run_job

        run_job(cfg, output_dir(), lambda c: job(run, c))

    return _main


def study_entry(run: Callable[[DictConfig], dict], config_name: str, job: Callable = study_job,
                validate: Callable[[DictConfig], object] | None = None,
                rules=None) -> Callable[[], None]:
    """``main`` of ``python -m memorization.<config_name>``: an unknown option of a group or a
    bad value (``validate``, by default :func:`validate_study` of the node ``config_name``)
    fails in one line before Hydra starts (as in memorization.run), then :func:`study_main`
    with ``job``."""
    hydra_main = study_main(run, config_name, job)
    key = config_name
    check = validate or (lambda cfg: validate_study(cfg, key))

    def main() -> None:
        setup_process()
        from memorization.cli.entry import is_sweep, started
        from memorization.cli.sweep import hydra_sweep

        with started(config_name, validate=check, rules=rules) as out:
            hydra_sweep(hydra_main, out, is_sweep(sys.argv[1:]))

    return main
