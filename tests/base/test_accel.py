"""Speed options (memorization/base/accel.py): trainer.precision, trainer.matmul_precision and
trainer.compile, on the CPU: checked before training, the steps really run in the asked
precision, the metrics do not (float32 products outside autocast), compile leaves the results
and the checkpoints as they were."""

from __future__ import annotations

import json

import pytest
import torch

from memorization.base import accel
from memorization.base.errors import ConfigError
from memorization.cli.run import train
from memorization.engine.module import Classifier
from memorization.jobs.validate import validate
from tests.conftest import FAST, compose_config

SHORT = ["trainer.max_epochs=3", "stop_at_train_acc=null", "callbacks=no_checkpoint"]


@pytest.mark.parametrize(("override", "says"), [
    ("trainer.precision=16-true", "trainer.precision=16-true is not one of"),
    ("trainer.precision=bf16-true", "the metrics need float32 weights"),
    ("trainer.matmul_precision=tf32", "trainer.matmul_precision=tf32 is not one of"),
    ("trainer.compile=no_such_backend", "no such torch.compile backend"),
    ("trainer.compile=3", "must be true, false or a torch.compile backend"),
])
def test_bad_speed_options_fail_before_training(make_cfg, override, says):
    with pytest.raises(ConfigError, match=says) as err:
        validate(make_cfg(override))
    assert "\n" not in str(err.value)


def test_good_speed_options_pass(make_cfg):
    validate(make_cfg("trainer.precision=bf16-mixed", "trainer.matmul_precision=high",
                      "trainer.compile=aot_eager"))


def test_full_precision_undoes_autocast_and_tf32():
    """Inside it a product is exact float32 even under a bf16 autocast and 'medium' products."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    exact = a @ b
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert (a @ b).dtype == torch.bfloat16  # the setting bites here
            with accel.full_precision():
                inside = a @ b
                assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "medium"  # restored
    finally:
        torch.set_float32_matmul_precision(before)
    assert inside.dtype == torch.float32 and torch.equal(inside, exact)


def test_bf16_mixed_steps_run_in_bf16_and_the_metrics_in_float32(make_cfg, monkeypatch):
    seen = {}
    step = Classifier.training_step

    def spy(self, batch, batch_idx):
        seen.setdefault("logits", self.net(batch["x"]).dtype)
        seen.setdefault("weights", next(self.net.parameters()).dtype)
        seen.setdefault("loss_sums", self.losses["fit_"].total.dtype)
        return step(self, batch, batch_idx)

    from memorization.metrics.callback import LayerMetrics

    compute = LayerMetrics._compute

    def spy_metrics(self, dm, net):
        seen.setdefault("metrics_autocast", torch.is_autocast_enabled("cpu"))
        return compute(self, dm, net)

    monkeypatch.setattr(Classifier, "training_step", spy)
    monkeypatch.setattr(LayerMetrics, "_compute", spy_metrics)
    train(make_cfg("trainer.precision=bf16-mixed", *SHORT))
    assert seen == {"logits": torch.bfloat16, "weights": torch.float32,
                    "loss_sums": torch.float64, "metrics_autocast": False}


def test_the_metrics_are_the_same_under_any_step_precision(make_cfg):
    """The same trained weights give the same metric values whatever the steps' settings."""
    from memorization.metrics.callback import LayerMetrics

    cfg = make_cfg(*SHORT)
    import hydra

    dm = hydra.utils.instantiate(cfg.data, noise=cfg.noise, _convert_="all")
    dm.setup("fit")
    torch.manual_seed(0)
    net = hydra.utils.instantiate(cfg.model, _convert_="all")
    cb = LayerMetrics({"csr": {"enabled": False}})
    cb.setup(type("T", (), {"datamodule": dm})(), type("M", (), {"net": net})(), "fit")
    plain = cb.compute(dm, net)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = cb.compute(dm, net)
    finally:
        torch.set_float32_matmul_precision(before)
    assert plain.keys() == mixed.keys()
    assert all(torch.equal(plain[k], mixed[k]) for k in plain)


def test_matmul_precision_is_set_per_job_and_not_passed_to_lightning(make_cfg):
    from memorization.config.replicas import trainer_options
    from memorization.engine.trainer import make_trainer

    cfg = make_cfg("trainer.matmul_precision=high", "trainer.compile=aot_eager")
    before = torch.get_float32_matmul_precision()
    try:
        make_trainer(cfg, [], [])
        assert torch.get_float32_matmul_precision() == "high"
        make_trainer(make_cfg(), [], [])  # the next job of a reused worker: back to exact
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
    assert not {"replicas", "compile", "matmul_precision"} & set(trainer_options(cfg))


@pytest.mark.parametrize("stack", [[], ["trainer.replicas=2", "replicas.mode=vmap"],
                                   ["trainer.replicas=2", "replicas.mode=loop"]],
                         ids=["single", "stacked-vmap", "stacked-loop"])
def test_compile_gives_the_eager_results(tmp_path, stack, monkeypatch):
    """torch.compile (the aot_eager backend: the compiled graph without inductor's codegen,
    quick on a CPU) trains to the eager run's losses; the checkpointed state is the plain
    network's (no _orig_mod keys). The compiled run's steps really go through torch.compile,
    the stacked job's too (its module comes from the engine's one builder)."""
    backends = []
    plain = accel.compiled
    monkeypatch.setattr(accel, "compiled", lambda fn, option: (
        backends.append(option) if option else None) or plain(fn, option))

    def finals(name: str, *extra: str) -> list[dict]:
        out = tmp_path / name
        summary = train(compose_config([*FAST, *SHORT, *stack, *extra], output_dir=out))
        if not stack:
            return [summary["final"]]
        return [json.loads((out / "replicas" / str(k) / "metrics.json").read_text())["final"]
                for k in range(2)]

    eager = finals("eager")
    assert backends == []
    compiled = finals("compiled", "trainer.compile=aot_eager")
    assert backends and set(backends) == {"aot_eager"}
    for e, c in zip(eager, compiled, strict=True):
        assert c["train/loss"] == pytest.approx(e["train/loss"], rel=1e-5)
        assert c["train/acc"] == e["train/acc"]


def test_compiled_module_state_is_the_plain_networks():
    from memorization.models import MLP

    net = MLP(in_shape=(1, 4, 4), num_classes=3, depth=1, width=8)
    module = Classifier(net=net)
    keys = set(module.state_dict())
    module.compile_steps("aot_eager")
    module.training_step({"x": torch.randn(5, 1, 4, 4), "y": torch.zeros(5, dtype=torch.long)}, 0)
    assert set(module.state_dict()) == keys
    assert not any("_orig_mod" in k for k in keys)
