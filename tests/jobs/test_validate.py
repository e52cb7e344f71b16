"""Every config option composes and validates; invalid values fail with one clear line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from memorization.base.errors import ConfigError, root_error
from memorization.jobs.validate import validate
from memorization.studies.common import STUDY_KEYS
from tests.conftest import CONF, run_cli

GROUPS = ["data", "noise", "model", "optim", "trainer", "logger", "callbacks", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# options that need other inputs than the default 8x8 digits: composed with data that fits
NEEDS = {"model=alexnet": ["data=synthetic", "data.shape=[3,32,32]"]}


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_validates(make_cfg, override):
    cfg = make_cfg(*NEEDS.get(override, []), override, fast=False)
    for key in cfg:  # every interpolation resolves (hydra's own node is read-only)
        if key != "hydra" and OmegaConf.is_config(cfg[key]):
            OmegaConf.to_container(cfg[key], resolve=True)
    study = next((k for k in STUDY_KEYS if k in cfg), None)
    if study is not None:  # a study's preset (tests/studies/test_sensitivity.py, test_easy_hard.py)
        with pytest.raises(ConfigError, match=f"for python -m memorization.{study}"):
            validate(cfg)
        return
    if override == "trainer=gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU is visible"):
            validate(cfg)
        return
    validate(cfg)


def test_a_model_that_does_not_fit_the_data_fails_in_one_line(make_cfg):
    with pytest.raises(ConfigError, match="alexnet with stem=auto takes 32x32"):
        validate(make_cfg("model=alexnet", fast=False))  # 8x8 digits


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), f"conf/{group} has no options"


def test_defaults_are_the_documented_job(make_cfg):
    cfg = make_cfg(fast=False)
    assert cfg.data.source == "digits"
    assert cfg.noise.name == "label_flip" and cfg.noise.p == 0.2
    assert cfg.model._target_ == "memorization.models.mlp.MLP"
    assert cfg.logger.wandb.mode == "offline"
    assert cfg.seed == 0 and cfg.stop_at_train_acc == 1.0
    assert cfg.trainer.use_distributed_sampler is False


def test_presets_set_the_papers_shapes(make_cfg):
    assert make_cfg("model=mlp_10x512").model.bias == "first"
    assert make_cfg("model=mlp_10x512").model.depth == 10
    assert make_cfg("model=mlp_2x4096").model.width == 4096
    exp = make_cfg("experiment=theunissen_digits")
    assert exp.module.loss == "mse" and exp.optim._target_ == "torch.optim.Adam" \
        and exp.model.depth == 10
    zhang = make_cfg("experiment=zhang_digits_random_labels")
    assert zhang.noise.name == "random_labels" and zhang.optim.scheduler.gamma == 0.9984
    assert zhang.optim.scheduler._target_ == "torch.optim.lr_scheduler.ExponentialLR"
    assert exp.stop_at_train_acc is None and exp.trainer.max_epochs == 400


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="launchers extra not installed")
@pytest.mark.parametrize("launcher", ["parallel", "slurm"])
def test_launcher_options_compose(make_cfg, launcher):
    cfg = make_cfg(f"hydra/launcher={launcher}")
    assert "_target_" in cfg.hydra.launcher


BAD = [
    (["noise.p=1.5"], "noise.p=1.5 must be a number in [0, 1]"),
    (["noise.p=-0.1"], "noise.p=-0.1 must be a number in [0, 1]"),
    (["noise.name=foo"], "noise.name='foo' is unknown"),
    (["noise=random_labels", "noise.p=0.5"], "noise=random_labels is defined with p=1.0"),
    (["noise=label_flip", "noise.apply_to_test=true"], "only defined for shuffled_pixels"),
    (["data.source=nope"], "data.source='nope' is unknown"),
    (["model.in_shape=[1,8,8]"], "does not fit the data's inputs"),
    (["model.num_classes=7"], "model.num_classes=7 but the data has 3 classes"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1"),
    (["trainer.use_distributed_sampler=true"], "use_distributed_sampler must be false"),
    (["stop_at_train_acc=2"], "stop_at_train_acc=2"),
    (["optim.lr=0"], "optim.lr=0"),
    (["optim.lr=-1"], "optim.lr=-1 must be a number > 0"),
    (["optim._target_=torch.optim.Nope"], "optim._target_=torch.optim.Nope cannot be imported"),
    (["optim=sgd", "optim._target_=torch.optim.Adam"],
     "optim.momentum=null (or ~optim.momentum) for torch.optim.Adam"),
    (["optim.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR"],
     "optim.scheduler: torch.optim.lr_scheduler.ExponentialLR refused its arguments"),
    (["optim.scheduler.gamma=1.5"], "optim.scheduler.gamma=1.5 must be a number in (0, 1]"),
    (["module.loss=hinge"], "module.loss='hinge'"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.normalize=true", "data.per_image_whitening=true"],
     "data.per_image_whitening=true replaces data.normalize"),
    (["seed=-1"], "seed=-1"),
    (["+model.colour=red"], "model.colour is not a key of model; its keys: in_shape"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9] must be two numbers"),
    (["optim=sgd", "optim.momentum=-1"], "optim.momentum=-1"),
    (["ckpt_path=/nonexistent.ckpt"], "ckpt_path=/nonexistent.ckpt is not a file"),
    (["metrics.every_n_epochs=0"], "metrics.every_n_epochs=0"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_invalid_values_raise_config_error(make_cfg, overrides, message):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# a value of the wrong type (or a misspelt key) is refused by the schemas while Hydra composes
# (memorization/config/schemas.py); root_error makes Hydra's several lines one, as the entry point
# does
WRONG_TYPE = [
    (["seed=true"], "seed=true must be an integer"),
    (["noise.p=true"], "noise.p=true must be a number"),
    (["noise.p=abc"], "noise.p=abc must be a number"),
    (["stop_at_train_acc=abc"], "stop_at_train_acc=abc must be a number"),
    (["data.val_size=abc"], "data.val_size=abc must be a number"),
    (["data.batch_size=abc"], "data.batch_size=abc must be an integer"),
    (["data.batch_size=1.5"], "data.batch_size=1.5 must be an integer"),
    (["data.normalize=abc"], "data.normalize=abc must be true or false"),
    (["data.shape=[1,a]"], "data.shape[1]=a must be an integer"),
    (["optim.lr=abc"], "optim.lr=abc must be a number"),
    (["model.depth=abc"], "model.depth=abc must be an integer"),
    (["model.num_classes=null"], "model.num_classes=null is not allowed"),
    (["module.adversarial.weight=abc"], "module.adversarial.weight=abc must be a number"),
    (["threads=abc"], "threads=abc must be an integer"),
    (["optim.lr_decay=0.95"], "optim.lr_decay is not a key of optim: check the spelling"),
    (["metrics.cosine.enabled=maybe"], "metrics.cosine.enabled=maybe must be true or false"),
    (["metrics.masc.variance=abc"], "metrics.masc.variance=abc must be a number"),
    (["metrics.every_n_epochs=1.5"], "metrics.every_n_epochs=1.5 must be an integer"),
]


@pytest.mark.parametrize(("overrides", "message"), WRONG_TYPE)
def test_wrong_types_fail_while_composing_with_one_line(make_cfg, overrides, message):
    with pytest.raises(Exception) as err:
        make_cfg(*overrides)
    line = str(root_error(err.value))
    assert message in line
    assert "\n" not in line


def test_every_data_option_takes_every_data_key(make_cfg):
    """One schema for conf/data/*.yaml: a key of DataConfig composes on every option."""
    from dataclasses import fields

    from memorization.data import DataConfig

    keys = {f.name for f in fields(DataConfig)}
    for option in _options("data"):
        cfg = make_cfg(f"data={option}", fast=False)
        assert keys <= set(cfg.data), option
    cfg = make_cfg("data=digits", "data.per_image_whitening=true", "data.normalize=false",
                   fast=False)
    assert cfg.data.per_image_whitening is True
    validate(cfg)


def test_base_presets_are_not_options():
    """The experiment bases (conf/experiment/base/) are shared by presets, not run on their
    own: neither --help nor the option check offers them."""
    from memorization.cli.entry import unknown_option as _unknown_option
    from memorization.cli.help import _options as help_options

    assert (CONF / "experiment" / "base" / "zhang_cifar10.yaml").is_file()
    assert "base" not in help_options(CONF, "experiment")
    assert not any(o.startswith("base") for o in help_options(CONF, "experiment"))
    assert "experiment=base is not an option" in _unknown_option(["experiment=base"])


def test_structured_noise_needs_square_images(make_cfg):
    cfg = make_cfg("noise=structured", "data.shape=[16]", "data.source_options.shape=[16]")
    with pytest.raises(ConfigError, match="needs square images"):
        validate(cfg)


def test_unknown_option_is_hydras_clear_error(make_cfg):
    with pytest.raises(MissingConfigException, match="noise/foo"):
        make_cfg("noise=foo")


def test_cli_bad_value_fails_before_training_with_one_line(tmp_path):
    res = run_cli(["noise.p=1.5", "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path,
                  timeout=120)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert errors == ["error: noise.p=1.5 must be a number in [0, 1]: the probability that a "
                      "training sample is corrupted"]
    assert "Epoch" not in res.stdout
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "corruption.npz").exists()


def test_cli_unknown_option_is_one_line(tmp_path):
    res = run_cli(["noise=foo", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: noise=foo is not an option of 'noise'")
    assert "label_flip" in lines[0]


@pytest.mark.parametrize("entry, args, line", [
    ("memorization.sensitivity", ["nosuch=1"], "error: nosuch is not a key of the config: "
     "check the spelling (its keys: python -m memorization.sensitivity --cfg job"),
    ("memorization.easy_hard", ["nosuch=1"], "error: nosuch is not a key of the config: "
     "check the spelling (its keys: python -m memorization.easy_hard --cfg job"),
    ("memorization.easy_hard", ["model.width=abc"], "error: model.width=abc must be an integer"),
    ("memorization.run", ["model.width=abc"], "error: model.width=abc must be an integer >= 1"),
    ("memorization.run", ["model.width=[64,x,64]"], "error: model.width[1]=x must be an integer"),
    ("memorization.run", ["replicas.vary=seed"],
     "error: replicas.vary=seed must be a list: replicas.vary=[seed]"),
    ("memorization.run", ["metrics.masc.layers=[nosuch]"],
     "error: metrics.masc.layers: 'nosuch' matches no probe layer of this model; its layers "
     "are input, fc1, fc2, fc3"),
    ("memorization.run", ["-m", "noise.p=0,0.2", "metrics.masc.layers=[nosuch]"],
     "error: job 0 (noise.p=0): metrics.masc.layers: 'nosuch' matches no probe layer"),
])
def test_every_entry_point_refuses_bad_input_in_one_line_writing_nothing(tmp_path, entry,
                                                                         args, line):
    """Each entry point: exit 2, one line, and no output folder made (checked before Hydra,
    W&B or training start)."""
    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    res = subprocess.run([sys.executable, "-m", entry, *args, f"hydra.run.dir={out}",
                          f"hydra.sweep.dir={out}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert not out.exists()


def test_unknown_option_check_lets_valid_forms_through():
    from memorization.cli.entry import unknown_option as _unknown_option

    assert _unknown_option(["-m", "noise=label_flip,gaussian", "noise.p=0,0.5"]) is None
    assert _unknown_option(["logger=[csv,wandb]", "+experiment=theunissen_digits"]) is None
    assert _unknown_option(["hydra/launcher=joblib", "experiment=null"]) is None
    assert "model=mlp_9x9" in _unknown_option(["model=mlp,mlp_9x9"])


@pytest.mark.parametrize("target, fused, expected", [
    ("torch.optim.Adam", None, True), ("torch.optim.SGD", None, True),
    ("torch.optim.Adam", False, False), ("torch.optim.RMSprop", None, None)])
def test_optimizer_takes_its_fused_step_unless_told_not_to(target, fused, expected):
    from memorization.engine.optim import OptimConfig

    opt, _ = OptimConfig.from_dict({"_target_": target, "lr": 0.01, "fused": fused}).build(
        [torch.zeros(3, requires_grad=True)])
    assert type(opt).__name__ == target.rsplit(".", 1)[-1]
    assert opt.defaults.get("fused") == expected


def test_a_top_level_key_nothing_reads_is_refused(make_cfg):
    """``+dynamics.enabled=true`` composes (``+`` adds any key), but nothing would read it: one
    line, as for a misspelt key inside a group (``+noise.pp`` is refused by its schema)."""
    from memorization.jobs.validate import validate

    with pytest.raises(ConfigError, match=r"^nothing reads a top-level key 'dynamics' \(added "
                                          r"with \+\?\): remove it"):
        validate(make_cfg("+dynamics.enabled=true"))
    validate(make_cfg())  # the default's keys are all read
