"""Arpit et al.'s loss sensitivity (memorization/studies/gradients.py, sensitivity.py): the
unrolled gradient against finite differences, the Gini coefficient on hand-worked values, the
command end to end."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.models import MLP
from memorization.studies import sensitivity
from memorization.studies.gradients import (
    SGD,
    batch_schedule,
    gini,
    input_grad_norm,
    loss_sensitivity,
    mean_loss,
    start_params,
    unrolled_steps,
)
from tests.study_utils import compose_study, noise_sweep, study_presets
from tests.wandb_offline import read_offline_run

SYNTHETIC = ["data=synthetic", "data.train_size=24", "sensitivity.batch_size=4",
             "sensitivity.steps=6", "sensitivity.every=2", "sensitivity.class_every=4",
             "sensitivity.device=cpu", "logger=none"]


def _tiny(n: int = 5, d: int = 3, k: int = 3):
    torch.manual_seed(0)
    # tanh: smooth, so central differences are exact to O(eps^2) (ReLU has kinks)
    net = MLP(in_shape=(d,), num_classes=k, depth=1, width=4, activation="tanh").double()
    x = torch.randn(n, d, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])[:n]
    return net, x, y


def _loss_after(net, x_train, x_eval, y, batches, opt):
    *_, last = unrolled_steps(net, start_params(net), x_train, y, batches, opt)
    return mean_loss(net, last, x_eval, y)


@pytest.mark.parametrize("direct", [False, True])
def test_unrolled_gradient_equals_central_differences(direct):
    net, x, y = _tiny()
    batches = batch_schedule(len(y), 2, 4, seed=0)  # 4 updates, each example used at least once
    opt = SGD(lr=0.5, momentum=0.9, weight_decay=0.01)
    xt = x.clone().requires_grad_(True)
    loss = _loss_after(net, xt, xt if direct else x, y, batches, opt)
    (grad,) = torch.autograd.grad(loss, xt)

    eps, fd = 1e-6, torch.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            hi, lo = x.clone(), x.clone()
            hi[i, j] += eps
            lo[i, j] -= eps
            f_hi = _loss_after(net, hi, hi if direct else x, y, batches, opt)
            f_lo = _loss_after(net, lo, lo if direct else x, y, batches, opt)
            fd[i, j] = (f_hi - f_lo) / (2 * eps)
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-9)
    assert fd.abs().sum() > 1e-3  # the check is not vacuous

    # the measure is that gradient's L1 norm per example, at the recorded step
    (rec,) = [r for r in loss_sensitivity(net, x, y, batches, opt, lambda t: t == 4,
                                          direct=direct)]
    assert rec.step == 4
    assert torch.allclose(rec.g, grad.abs().sum(1), rtol=1e-10)


def test_unrolled_leaves_the_network_and_unused_examples_alone():
    net, x, y = _tiny()
    before = [p.clone() for p in net.parameters()]
    batches = [torch.tensor([0, 1])]  # one update, on examples 0 and 1 only
    (rec,) = list(loss_sensitivity(net, x, y, batches, SGD(lr=0.1), lambda t: True))
    assert (rec.g[2:] == 0).all() and (rec.g[:2] > 0).all()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_class_matrix_bounds_the_total():
    """sum_i ||dL(y=i)/dx||_1 >= ||dL/dx||_1 (triangle inequality), per example, so each
    column sum of the matrix is at least the mean g of that class's examples."""
    net, x, y = _tiny()
    batches = batch_schedule(len(y), 2, 3, seed=1)
    (rec,) = list(loss_sensitivity(net, x, y, batches, SGD(lr=0.3), lambda t: t == 3,
                                   num_classes=3))
    assert rec.classes.shape == (3, 3) and (rec.classes >= 0).all()
    for j in range(3):
        assert rec.classes[:, j].sum() >= rec.g[y == j].mean() * (1 - 1e-9)


def test_gini_hand_computed():
    assert float(gini(torch.full((7,), 3.0))) == pytest.approx(0.0, abs=1e-12)
    for n in (2, 5, 1000):
        one = torch.zeros(n)
        one[n // 2] = 2.5
        assert float(gini(one)) == pytest.approx((n - 1) / n, abs=1e-12)
    # [1, 2, 3, 4]: sum |v_k - v_l| over ordered pairs = 20; 20 / (2 * 16 * 2.5) = 0.25
    assert float(gini(torch.tensor([4.0, 1.0, 3.0, 2.0]))) == pytest.approx(0.25, abs=1e-12)
    assert float(gini(torch.zeros(4))) == 0.0  # all equal (zero)
    rows = gini(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert rows.tolist() == pytest.approx([0.0, 0.5])


def test_input_grad_norm_is_each_examples_own_gradient():
    net, x, y = _tiny()
    got = input_grad_norm(net, x, y, batch_size=2)
    for i in range(len(y)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xi), y[i:i + 1])
        (g,) = torch.autograd.grad(loss, xi)
        assert float(got[i]) == pytest.approx(float(g.abs().sum()), rel=1e-10)


def test_bad_values_fail_in_one_line():
    with pytest.raises(ConfigError, match="class_every=15 must be a multiple"):
        sensitivity.SensitivityConfig(every=10, class_every=15)
    with pytest.raises(ConfigError, match="sensitivity.method=foo"):
        sensitivity.SensitivityConfig(method="foo")


@pytest.mark.parametrize("method", ["unrolled", "input_grad_norm"])
def test_runs_in_process(tmp_path, method):
    cfg = compose_study("sensitivity", [*SYNTHETIC, f"sensitivity.method={method}",
                                        "sensitivity.epochs=2"], tmp_path)
    summary = sensitivity.run(cfg)
    assert 0 <= summary["gini"] <= 1 and summary["method"] == method
    table = pd.read_csv(tmp_path / "gini.csv")
    assert len(table) == (3 if method == "unrolled" else 3)  # steps 2, 4, 6 / epochs 0, 1, 2
    per = pd.read_csv(tmp_path / "per_example.csv")
    assert len(per) == 24 and (per["g_bar"] >= 0).all()
    saved = torch.load(tmp_path / "sensitivity.pt", weights_only=True)
    assert saved["g"].shape == (3, 24)
    assert (saved["classes"] is not None) == (method == "unrolled")
    assert (tmp_path / "gini.png").is_file()


def test_unique_labels_and_sgd_only(tmp_path):
    cfg = compose_study("sensitivity", [*SYNTHETIC, "sensitivity.unique_labels=true"], tmp_path)
    assert sensitivity.run(cfg)["num_classes"] == 24
    cfg = compose_study("sensitivity", [*SYNTHETIC, "optim._target_=torch.optim.RMSprop"],
                        tmp_path)
    with pytest.raises(ConfigError, match="unrolls plain SGD"):
        sensitivity.run(cfg)


@pytest.mark.parametrize("preset", study_presets("sensitivity"))
def test_presets_compose_and_run_on_synthetic_data_of_their_shape(tmp_path, preset):
    own = compose_study("sensitivity", [f"experiment={preset}"], tmp_path)
    shape, k = list(own.data.shape), own.data.num_classes
    cfg = compose_study("sensitivity", [
        f"experiment={preset}", *SYNTHETIC, f"data.shape={shape}", f"data.num_classes={k}",
        "data.source_options.n_train=40"], tmp_path)
    assert cfg.model == own.model and cfg.optim == own.optim
    assert sensitivity.run(cfg)["steps"] == 6


@pytest.mark.slow
def test_command_sweep_end_to_end(tmp_path):
    for summary in noise_sweep("sensitivity", SYNTHETIC, tmp_path):
        assert summary["steps"] == 6
    assert summary["corrupted"] > 0 and summary["noise"] == "random_labels"
    assert (tmp_path / "gini.png").is_file()  # the sweep's figure, a line per job
    run = read_offline_run(tmp_path / "1")  # each job's W&B run: its curve, figures, summary
    steps = [row["step"] for row in run["history"] if "gini" in row]
    assert steps == [2, 4, 6] and run["summary"]["gini"] == summary["gini"]
    assert any("image-file" in str(row.get("figures/gini")) for row in run["history"])
    assert run["config"]["noise"]["name"] == "random_labels"


def test_a_study_preset_is_refused_by_memorization_run(tmp_path):
    from memorization.jobs.validate import validate
    from tests.conftest import compose_config

    cfg = compose_config(["experiment=arpit_loss_sensitivity_digits"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="python -m memorization.sensitivity"):
        validate(cfg)
