"""Arpit et al.'s adversarial training: the loss mixes clean and LASS points, modes restored."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import memorization.engine.module as module
from memorization.base.errors import ConfigError
from memorization.cli.run import train
from memorization.engine.module import AdversarialConfig, Classifier
from memorization.jobs.validate import validate
from memorization.models import MLP
from tests.conftest import compose_config


def test_loss_is_the_weighted_mix_of_clean_and_adversarial(monkeypatch):
    torch.manual_seed(0)
    net = MLP(in_shape=(1, 2, 2), num_classes=3, depth=1, width=5, dropout=0.5)
    clf = Classifier(net, adversarial={"weight": 0.25})
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    shift = torch.full_like(x, 0.5)
    seen = {}

    def fake_search(model, xb, alpha, beta, r, max_iter, generator=None):
        seen["eval"] = not model.training  # the search runs in eval mode
        seen["r"] = float(r)
        return torch.zeros(len(xb), dtype=torch.bool), xb + shift

    monkeypatch.setattr(module, "lass_search", fake_search)
    net.train()
    clf.training_step({"x": x, "y": y}, 0)
    assert seen["eval"] and net.training  # searched in eval mode, training mode back after
    assert seen["r"] == pytest.approx(0.3 / 255)  # no datamodule: std 1
    net.eval()  # no dropout: the two forward passes below are comparable
    got = clf.training_step({"x": x, "y": y}, 0)
    want = 0.75 * F.cross_entropy(net(x), y) + 0.25 * F.cross_entropy(net(x + shift), y)
    assert torch.allclose(got, want)


def test_off_by_default_and_bad_values_fail_in_one_line(tmp_path):
    assert AdversarialConfig().weight == 0
    with pytest.raises(ConfigError, match="module.adversarial.weight=1.5 must be in"):
        validate(compose_config(["module.adversarial.weight=1.5"], output_dir=tmp_path))
    with pytest.raises(ConfigError, match="max_iter >= 1"):
        AdversarialConfig(weight=0.5, max_iter=0)


def test_a_run_with_adversarial_training(tmp_path):
    cfg = compose_config(["module.adversarial.weight=0.5", "module.adversarial.max_iter=5",
                          "logger=none", "metrics=none",
                          "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                          "trainer.max_epochs=2", "stop_at_train_acc=null"],
                         output_dir=tmp_path)
    final = train(cfg)["final"]
    assert final["train/acc"] > 0.5  # it still learns the digits
