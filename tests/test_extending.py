"""A metric added through the protocol alone: defined here, named in the metrics config, logged.

The toy metrics are the worked examples of docs/extending.md; their values are computed again
here by hand, from the network's modules, without hooks or the driver."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torchmetrics import Metric

from memorization.base.errors import ConfigError
from memorization.cli.run import train
from memorization.jobs.validate import validate
from memorization.metrics.callback import LayerMetrics
from memorization.metrics.config import read_metrics_config
from memorization.metrics.protocol import Context, LayerMetric, MetricConfig, Probe
from memorization.models import MLP
from tests.conftest import compose_config
from tests.metrics.test_callback import _setup

HERE = "tests.test_extending"


class ActiveCount(Metric):
    """Active (unit, sample) pairs and all pairs, summed over batches and DDP ranks."""

    full_state_update = False

    def __init__(self, threshold: float, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("active", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, out: torch.Tensor) -> None:
        self.active += (out > self.threshold).sum()
        self.total += out.numel()

    def compute(self) -> torch.Tensor:
        return self.active.double() / self.total


@dataclass
class ActiveConfig(MetricConfig):
    threshold: float = 0.0  # a unit is active where its output exceeds this

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ConfigError(f"metrics.active.threshold={self.threshold} must be >= 0")


class ActiveFraction(LayerMetric):
    """The fraction of a layer's units active on the probe samples: ``active/<split>/<layer>``."""

    name = "active"
    Config = ActiveConfig

    def begin(self, ctx: Context) -> None:
        self.ctx = ctx
        self.counts: dict[tuple[str, str], ActiveCount] = {}

    def update(self, split: str, probe: Probe) -> None:
        key = (split, probe.layer.name)
        if key not in self.counts:
            self.counts[key] = ActiveCount(self.cfg.threshold).to(self.ctx.device)
        self.counts[key].update(probe.out)

    def compute(self) -> dict[str, torch.Tensor]:
        return {f"active/{split}/{layer}": m.compute() for (split, layer), m in self.counts.items()}


@dataclass
class SpreadConfig(MetricConfig):
    pass


class Spread(LayerMetric):
    """A metric that needs a fitting pass: the mean squared distance of a layer's training outputs
    to their mean, the mean fitted first (``fit``), the distances taken in a second pass over the
    training probe set (``layers_to_revisit``, ``revisit``). ``spread/train/<layer>``."""

    name = "spread"
    Config = SpreadConfig
    splits = ("train",)

    def begin(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sums: dict[str, torch.Tensor] = {}
        self.n: dict[str, int] = {}  # this rank's samples (a single-process toy: no DDP sync)
        self.mean: dict[str, torch.Tensor] = {}
        self.sq: dict[str, torch.Tensor] = {}

    def update(self, split: str, probe: Probe) -> None:
        out = probe.out.flatten(1).double()
        name = probe.layer.name
        self.sums[name] = self.sums.get(name, 0) + out.sum(0)
        self.n[name] = self.n.get(name, 0) + out.shape[0]

    def fit(self) -> dict[str, torch.Tensor]:
        self.mean = {name: s / self.n[name] for name, s in self.sums.items()}
        return {}

    def layers_to_revisit(self) -> set[str]:
        return set(self.mean)

    def revisit(self, probe: Probe) -> None:
        name = probe.layer.name
        d = (probe.out.flatten(1).double() - self.mean[name]).square().sum(1)
        self.sq[name] = self.sq.get(name, 0) + d.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {f"spread/train/{name}": s / self.n[name] for name, s in self.sq.items()}


def _by_hand(net: MLP, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every probe layer's outputs from the network's own modules: input, fc1, fc2."""
    with torch.no_grad():
        outs = {"input": x.flatten(1)}
        a = outs["input"]
        for i, (fc, act) in enumerate(zip(net.fcs, net.acts, strict=False)):
            a = act(fc(a))
            outs[f"fc{i + 1}"] = a
    return outs


def test_a_toy_metric_is_logged_under_its_key_with_its_value():
    dm, net, cb = _setup(probe_size=70, batch_size=32, csr={"enabled": False},
                         active={"class": f"{HERE}.ActiveFraction", "threshold": 0.1})
    logs = cb.compute(dm, net)
    net.eval()
    for split, idx in cb.probe.items():
        outs = _by_hand(net, dm.splits[split].tensors["x"][idx])
        for layer, out in outs.items():
            want = (out > 0.1).sum().item() / out.numel()
            assert logs[f"active/{split}/{layer}"].item() == pytest.approx(want, abs=1e-12)
    assert "cosine/train/fc1" in logs and "masc/test/fc2" in logs  # the others still run
    # the input layer's value (the data's only) is reused at the next evaluation
    with torch.no_grad():
        net.fcs[0].weight.mul_(2)
    again = cb.compute(dm, net)
    assert torch.equal(again["active/train/input"], logs["active/train/input"])
    assert not torch.equal(again["active/train/fc1"], logs["active/train/fc1"])


def test_a_metric_that_fits_first_gets_a_second_training_pass():
    dm, net, cb = _setup(probe_size=70, batch_size=32, csr={"enabled": False},
                         masc={"enabled": False}, spread={"class": f"{HERE}.Spread"})
    logs = cb.compute(dm, net)
    net.eval()
    outs = _by_hand(net, dm.splits["train"].tensors["x"][cb.probe["train"]])
    for layer, out in outs.items():
        want = (out.double() - out.double().mean(0)).square().sum(1).mean()
        assert logs[f"spread/train/{layer}"].item() == pytest.approx(want.item(), rel=1e-6)
    assert not any(k.startswith("spread/test/") for k in logs)


def test_a_new_metric_runs_in_a_training_run(tmp_path):
    cfg = compose_config(["data=synthetic", "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
                          "trainer.max_epochs=1", "stop_at_train_acc=null", "model.depth=2",
                          "model.width=16", "metrics.csr.enabled=false",
                          "metrics.masc.enabled=false",
                          f"+metrics.active.class={HERE}.ActiveFraction"],
                         output_dir=tmp_path)
    final = train(cfg)["final"]
    for key in ("active/train/input", "active/train/fc2", "active/test/fc1"):
        assert 0 < final[key] <= 1, key
    assert "masc/train/fc1" not in final and "cosine/train/fc1" in final


def test_metrics_none_turns_every_metric_off(tmp_path):
    cfg = compose_config(["metrics=none", f"+metrics.active.class={HERE}.ActiveFraction"],
                         output_dir=tmp_path)
    cb = LayerMetrics(cfg.metrics)
    assert not cb.cfg.enabled and set(cb.metrics) == {"cosine", "polarization", "masc", "csr",
                                                      "active"}
    cb.setup(None, None, "fit")  # disabled: asks nothing of the trainer
    assert cb.probe == {}


@pytest.mark.parametrize(("overrides", "message"), [
    (["metrics.masc.variance=2"], "metrics.masc.variance=2 is outside (0, 1]"),
    (["metrics.masc.method=svd"], "metrics.masc.method='svd' must be auto, gram or samples"),
    (["metrics.csr.n=0"], "metrics.csr.n=0 must be >= 1"),
    (["+metrics.masc.colour=red"], "metrics.masc: "),
    (["+metrics.active.threshold=1"], "metrics.active is not a metric entry"),
    ([f"+metrics.active.class={HERE}.Nope"], f"metrics.active.class={HERE}.Nope cannot be"),
    ([f"+metrics.active.class={HERE}.ActiveCount"], "is not a LayerMetric or ModelMetric"),
    ([f"+metrics.tally.class={HERE}.ActiveFraction"], "call the entry active"),
    ([f"+metrics.active.class={HERE}.ActiveFraction", "+metrics.active.threshold=-1"],
     "metrics.active.threshold=-1 must be >= 0"),
])
def test_bad_metric_entries_fail_in_one_line(tmp_path, overrides, message):
    cfg = compose_config(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_yaml_defaults_are_the_config_dataclasses_defaults():
    # a dict given in code is read over conf/metrics/default.yaml: the two must agree
    suite = read_metrics_config(None)
    assert list(suite.entries) == ["cosine", "polarization", "masc", "csr"]
    for name, (kind, config) in suite.entries.items():
        assert config == kind.Config(), name
