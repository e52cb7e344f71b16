"""The structured configs (memorization/config/schemas.py) from the command line: wrong types and
bad ranges in one line, any torch optimizer by ``_target_``, options from an extra config folder."""

from __future__ import annotations

import pytest

from memorization.base.errors import ConfigError, root_error
from memorization.cli.entry import unknown_option as _unknown_option
from memorization.cli.run import train
from memorization.jobs.validate import validate
from tests.conftest import run_cli


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_wrong_type_and_bad_range_in_process(make_cfg):
    with pytest.raises(Exception) as err:  # the schema's type: while Hydra composes
        make_cfg("optim.lr=abc")
    assert str(root_error(err.value)) == "optim.lr=abc must be a number"
    with pytest.raises(ConfigError) as bad:  # the dataclass's range: in validate
        validate(make_cfg("optim.lr=-1"))
    assert str(bad.value) == "optim.lr=-1 must be a number > 0"


@pytest.mark.parametrize(("arg", "line"), [
    ("data.batch_size=1.5", "error: data.batch_size=1.5 must be an integer"),
    ("optim.lr=-1", "error: optim.lr=-1 must be a number > 0"),
])
def test_cli_wrong_type_and_bad_range_are_one_line(tmp_path, arg, line):
    res = run_cli([arg, "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path,
                  timeout=120)
    assert res.returncode == 2
    assert _lines(res.stderr) == [line]
    assert "Epoch" not in res.stdout and not (tmp_path / "run" / "metrics.json").exists()


def test_an_optimizer_named_by_target_trains(make_cfg):
    cfg = make_cfg("optim._target_=torch.optim.RMSprop", "+optim.alpha=0.9",
                   "optim.scheduler._target_=torch.optim.lr_scheduler.StepLR",
                   "optim.scheduler.step_size=1", "optim.scheduler.gamma=0.5",
                   "+trainer.fast_dev_run=true", "metrics=none")
    summary = train(cfg)
    assert summary["final"]["test/acc"] is not None


def _extra_conf(tmp_path):
    """A config folder of one's own with a noise option conf/ does not have."""
    extra = tmp_path / "myconf"
    (extra / "noise").mkdir(parents=True)
    (extra / "noise" / "mine.yaml").write_text(
        "defaults:\n  - /schema/noise/base@_here_\n  - _self_\nname: label_uniform\np: 0.3\n")
    return extra


def test_options_of_an_extra_config_folder_are_options(tmp_path):
    extra = _extra_conf(tmp_path)
    assert _unknown_option(["--config-dir", str(extra), "noise=mine"]) is None
    assert _unknown_option([f"--config-dir={extra}", "noise=mine"]) is None
    assert _unknown_option(["-cd", str(extra), "noise=mine"]) is None
    assert _unknown_option([f"hydra.searchpath=[file://{extra}]", "noise=mine"]) is None
    assert _unknown_option(["hydra.searchpath=[pkg://tests]", "noise=label_flip"]) is None
    err = _unknown_option(["--config-dir", str(extra), "noise=mien"])
    assert err.startswith("noise=mien is not an option of 'noise'") and "mine" in err
    assert "noise=mine is not an option" in _unknown_option(["noise=mine"])


@pytest.mark.slow
def test_cli_extra_config_folder_and_a_typo(tmp_path):
    extra = _extra_conf(tmp_path)
    ok = run_cli(["--config-dir", str(extra), "noise=mine", "--cfg", "job", "--package",
                  "noise"], cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "name: label_uniform" in ok.stdout and "p: 0.3" in ok.stdout
    bad = run_cli(["--config-dir", str(extra), "noise=mien", f"hydra.run.dir={tmp_path}/run"],
                  cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    lines = _lines(bad.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: noise=mien is not an option")
