"""The report at the end of every ``-m`` sweep: a Hydra callback (conf/hydra/default.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    """Writes ``<sweep dir>/report/`` when a multirun ends and prints its summary table last.
    ``hydra.callbacks.report.enabled=false`` turns it off; ``figures=false`` writes the tables
    only; ``wandb=false`` keeps the report out of W&B."""

    def __init__(self, enabled: bool = True, figures: bool = True, wandb: bool = True):
        self.enabled, self.figures, self.wandb = enabled, figures, wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from memorization.report import format_report, write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = write_report([sweep_dir], figures=self.figures, wandb=self.wandb)
        except Exception as e:  # the jobs are done and saved: say so, do not fail the sweep
            print(f"report: could not be written ({type(e).__name__}: {e}); retry with "
                  f"python -m memorization.report {sweep_dir}", file=sys.stderr)
            return
        # printed, not logged: Hydra's log file is still the last job's
        print(format_report(report), flush=True)
