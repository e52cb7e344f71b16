"""Subset accuracies (metrics/subset_accuracy.py) and the Classifier LightningModule (module.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memorization.base.errors import ConfigError
from memorization.data import DataModule
from memorization.engine.module import Classifier
from memorization.metrics import SubsetAccuracy, subset_accuracy
from memorization.models import MLP

# -- subset_accuracy: a hand-worked example --------------------------------------------------------
#  i  y_true  y (train)  corrupted  pred   pred == y   pred == y_true
#  0    0       0          no         0      yes          yes
#  1    1       1          no         1      yes          yes
#  2    2       2          no         2      yes          yes
#  3    0       0          no         0      yes          yes
#  4    1       1          no         2      no           no
#  5    0       1          yes        1      yes          no
#  6    1       2          yes        2      yes          no
#  7    2       0          yes        2      no           yes
Y_TRUE = torch.tensor([0, 1, 2, 0, 1, 0, 1, 2])
Y = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0])
CORRUPTED = torch.tensor([False] * 5 + [True] * 3)
PRED = torch.tensor([0, 1, 2, 0, 2, 1, 2, 2])
EXPECTED = {
    "acc": Fraction(6, 8),  # hits on y: 0, 1, 2, 3, 5, 6
    "acc_true": Fraction(5, 8),  # hits on y_true: 0, 1, 2, 3, 7
    "acc_clean": Fraction(4, 5),  # clean 0..4, hits 0, 1, 2, 3
    "acc_corrupted": Fraction(2, 3),  # corrupted 5, 6, 7; hits on y: 5, 6
    "acc_corrupted_true": Fraction(1, 3),  # corrupted 5, 6, 7; hits on y_true: 7
}


def as_floats(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


def test_hand_worked_example():
    assert torch.equal(CORRUPTED, Y != Y_TRUE)  # consistent with a label corruption
    out = subset_accuracy(PRED, Y, Y_TRUE, CORRUPTED)
    assert set(out) == set(EXPECTED)
    for k, frac in EXPECTED.items():
        assert out[k].dtype == torch.float64
        assert float(out[k]) == pytest.approx(float(frac), abs=1e-12), k


def test_without_true_labels_only_acc():
    out = subset_accuracy(PRED, Y)
    assert list(out) == ["acc"]
    assert float(out["acc"]) == pytest.approx(6 / 8)


def test_empty_subsets_are_nan():
    none = torch.zeros(8, dtype=torch.bool)
    out = as_floats(subset_accuracy(PRED, Y_TRUE, Y_TRUE, none))  # p = 0: nothing corrupted
    assert math.isnan(out["acc_corrupted"]) and math.isnan(out["acc_corrupted_true"])
    assert out["acc"] == out["acc_true"] == out["acc_clean"] == pytest.approx(5 / 8)
    out = as_floats(subset_accuracy(PRED, Y, Y_TRUE, torch.ones(8, dtype=torch.bool)))
    assert math.isnan(out["acc_clean"])
    assert out["acc_corrupted"] == pytest.approx(6 / 8)
    assert out["acc_corrupted_true"] == pytest.approx(5 / 8)


def test_true_labels_and_corrupted_go_together():
    with pytest.raises(ValueError, match="both"):
        subset_accuracy(PRED, Y, Y_TRUE)
    with pytest.raises(ValueError, match="both"):
        subset_accuracy(PRED, Y, corrupted=CORRUPTED)


# -- SubsetAccuracy: streaming ---------------------------------------------------------------------
def random_set(n: int = 50, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, k, (n,), generator=g)
    corrupted = torch.rand(n, generator=g) < 0.4
    y = torch.where(corrupted, (y_true + torch.randint(1, k, (n,), generator=g)) % k, y_true)
    logits = torch.randn(n, k, generator=g)
    return logits, y, y_true, corrupted


@pytest.mark.parametrize("sizes", [(50,), (7, 20, 23), (1,) * 50])
def test_streaming_equals_one_shot(sizes):
    logits, y, y_true, corrupted = random_set()
    metric = SubsetAccuracy()
    start = 0
    for s in sizes:
        sl = slice(start, start + s)
        metric.update(logits[sl], y[sl], y_true[sl], corrupted[sl])
        start += s
    streamed = metric.compute()
    one_shot = subset_accuracy(logits.argmax(-1), y, y_true, corrupted)
    assert set(streamed) == set(one_shot) == set(EXPECTED)
    for k in one_shot:
        assert torch.equal(streamed[k], one_shot[k]), k


def test_streaming_hand_worked_example_accepts_predictions():
    metric = SubsetAccuracy()
    metric.update(PRED[:3], Y[:3], Y_TRUE[:3], CORRUPTED[:3])  # 1-D: already predicted labels
    metric.update(PRED[3:], Y[3:], Y_TRUE[3:], CORRUPTED[3:])
    out = metric.compute()
    for k, frac in EXPECTED.items():
        assert float(out[k]) == pytest.approx(float(frac), abs=1e-12), k


def test_streaming_without_true_labels_and_reset():
    logits, y, y_true, corrupted = random_set()
    metric = SubsetAccuracy()
    metric.update(logits[:10], y[:10])
    metric.update(logits[10:], y[10:])
    out = metric.compute()
    assert list(out) == ["acc"]
    assert torch.equal(out["acc"], subset_accuracy(logits.argmax(-1), y)["acc"])
    metric.reset()
    metric.update(logits[:5], y[:5], y_true[:5], corrupted[:5])
    expected = subset_accuracy(logits[:5].argmax(-1), y[:5], y_true[:5], corrupted[:5])
    out = metric.compute()
    assert set(out) == set(expected)
    assert torch.equal(out["acc"], expected["acc"])


# -- Classifier: losses ----------------------------------------------------------------------------
@pytest.fixture
def net():
    torch.manual_seed(0)
    return MLP(in_shape=(1, 2, 2), num_classes=3, depth=1, width=4)


X = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]], [[[1.0, 0.0], [0.5, 0.5]]],
                  [[[0.9, 0.8], [0.7, 0.6]]], [[[0.0, 0.0], [0.0, 1.0]]]])
Y4 = torch.tensor([0, 2, 1, 2])


def test_mse_loss_on_one_hot_targets(net):
    module = Classifier(net, loss="mse", optim={"_target_": "torch.optim.Adam", "lr": 1e-3})
    logits = module(X)
    assert logits.shape == (4, 3)
    one_hot = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    by_hand = ((logits - one_hot) ** 2).sum() / 12  # mean over 4 samples x 3 classes
    loss = module.loss_fn(logits, Y4)
    assert torch.allclose(loss, by_hand)
    assert torch.allclose(loss, F.mse_loss(logits, one_hot))
    assert not torch.allclose(loss, F.cross_entropy(logits, Y4))


def test_ce_loss(net):
    module = Classifier(net, loss="ce")
    logits = module(X)
    by_hand = -(logits.log_softmax(-1)[torch.arange(4), Y4]).mean()
    loss = module.loss_fn(logits, Y4)
    assert torch.allclose(loss, by_hand)
    assert torch.allclose(loss, F.cross_entropy(logits, Y4))


def test_num_classes_for_a_net_without_cfg():
    module = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 5)), loss="mse", num_classes=5)
    assert module.num_classes == 5
    logits = module(X)
    assert torch.allclose(module.loss_fn(logits, Y4),
                          F.mse_loss(logits, torch.eye(5)[Y4]))


EXP = "torch.optim.lr_scheduler.ExponentialLR"  # Zhang et al.'s per-epoch decay

@pytest.mark.parametrize(("kw", "match"), [
    (dict(loss="hinge"), "module.loss"),
    (dict(optim={"_target_": "torch.optim.Nope"}), "optim._target_"),
    (dict(optim={"lr": 0}), "optim.lr"),
    (dict(optim={"lr": -0.1}), "optim.lr"),
    (dict(optim={"weight_decay": -1}), "optim.weight_decay"),
    (dict(optim={"scheduler": {"_target_": EXP, "gamma": 0}}), "optim.scheduler.gamma"),
    (dict(optim={"scheduler": {"_target_": EXP, "gamma": 1.5}}), "optim.scheduler.gamma"),
])
def test_bad_config_raises(net, kw, match):
    with pytest.raises(ConfigError, match=match):
        Classifier(net, **kw)


# -- Classifier: optimizers ------------------------------------------------------------------------
def test_sgd(net):
    module = Classifier(net, optim={"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.5,
                                    "nesterov": True, "weight_decay": 1e-4})
    opt = module.configure_optimizers()
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.05, 0.5, True, 1e-4)
    assert {id(p) for p in group["params"]} == {id(p) for p in module.parameters()}


def test_adam(net):
    module = Classifier(net, optim={"_target_": "torch.optim.Adam", "lr": 1e-3,
                                    "betas": [0.8, 0.99]})
    opt = module.configure_optimizers()
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["lr"] == 1e-3
    assert tuple(opt.param_groups[0]["betas"]) == (0.8, 0.99)
    assert len(opt.param_groups[0]["params"]) == len(list(module.parameters()))


@pytest.mark.parametrize("name", ["torch.optim.SGD", "torch.optim.Adam"])
def test_lr_decay_scheduler(net, name):
    decay = {"_target_": EXP, "gamma": 0.95}
    out = Classifier(net, optim={"_target_": name, "lr": 0.1, "scheduler": decay}
                     ).configure_optimizers()
    sched = out["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.ExponentialLR)
    assert sched.gamma == 0.95
    assert out["lr_scheduler"]["interval"] == "epoch"
    assert sched.optimizer is out["optimizer"]
    # no scheduler _target_: a constant lr, no scheduler
    opt = Classifier(net, optim={"_target_": name, "lr": 0.1}).configure_optimizers()
    assert isinstance(opt, torch.optim.Optimizer)


# -- Classifier: a short fit, metrics checked against a manual evaluation --------------------------
class TestAccs(L.Callback):
    """Records test/acc after every validation loop."""

    __test__ = False

    def __init__(self):
        self.test_accs: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.test_accs.append(float(trainer.callback_metrics["test/acc"]))


def fit(max_epochs: int, sanity: int = 0, optim: dict | None = None, best: float | None = None,
        **data):
    L.seed_everything(0, verbose=False)
    dm = DataModule(source="synthetic", shape=(1, 4, 4), num_classes=3, batch_size=16,
                    eval_batch_size=8, noise={"name": "label_flip", "p": 0.5, "seed": 0}, **data)
    module = Classifier(MLP(in_shape=(1, 4, 4), num_classes=3, depth=1, width=32),
                        optim=optim or {"_target_": "torch.optim.Adam", "lr": 1e-2})
    if best is not None:  # as if resumed from a checkpoint that had reached this test accuracy
        module.best_test_acc.fill_(best)
    rec = TestAccs()
    trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, num_sanity_val_steps=sanity,
                        use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm, rec


def evaluate(module, dm) -> dict[str, float]:
    """The logged metrics recomputed from the final weights."""
    module.eval()
    out = {}
    with torch.no_grad():
        for split in dm.splits:
            t = dm.splits[split].tensors
            logits = module(t["x"])
            accs = subset_accuracy(logits.argmax(-1), t["y"], t.get("y_true"), t.get("corrupted"))
            out |= {f"{split}/{k}": float(v) for k, v in accs.items()}
            if split != "train":
                out[f"{split}/loss"] = float(F.cross_entropy(logits, t["y"]))
    return out


def test_fit_logs_metrics_of_the_final_weights():
    trainer, module, dm, rec = fit(3, val_size=16,
                                   optim={"_target_": "torch.optim.SGD", "lr": 0.1,
                                          "scheduler": {"_target_": EXP, "gamma": 0.5}})
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    expected = evaluate(module, dm)
    assert set(logged) == set(expected) | {"train/loss", "test/acc_best", "gap"}
    for k, v in expected.items():
        assert logged[k] == pytest.approx(v, abs=1e-5), k
    assert logged["gap"] == pytest.approx(logged["train/acc"] - logged["test/acc"], abs=1e-6)
    assert len(rec.test_accs) == 3
    assert logged["test/acc_best"] == pytest.approx(max(rec.test_accs))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    # Trainer.test logs test/acc and test/loss of the same weights
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert tested["test/acc"] == pytest.approx(expected["test/acc"], abs=1e-5)
    assert tested["test/loss"] == pytest.approx(expected["test/loss"], abs=1e-5)


def test_fit_without_eval_train_uses_training_steps():
    trainer, module, dm, _ = fit(1, eval_train=False)
    logged = trainer.callback_metrics
    assert dm.eval_splits == ["test"]
    for k in ("train/loss", "train/acc", "train/acc_true", "train/acc_clean",
              "train/acc_corrupted", "train/acc_corrupted_true", "test/acc", "gap"):
        assert k in logged, k
    assert 0.0 <= float(logged["train/acc"]) <= 1.0


def test_acc_best_is_a_running_max():
    assert math.isnan(float(Classifier(MLP(in_shape=(1, 2, 2), num_classes=3)).best_test_acc))
    trainer, *_ = fit(1, best=0.99)
    logged = trainer.callback_metrics
    assert float(logged["test/acc"]) < 0.99
    assert float(logged["test/acc_best"]) == pytest.approx(0.99)


def test_sanity_check_does_not_leak_into_first_epoch():
    trainer, module, dm, _ = fit(1, sanity=2, val_size=16)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for k, v in evaluate(module, dm).items():
        assert logged[k] == pytest.approx(v, abs=1e-5), k


def test_step_schedule_and_any_optimizer_by_target():
    from memorization.models import MLP as _MLP

    net = _MLP(in_shape=(4,), num_classes=2, depth=1, width=4)
    step = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 3, "gamma": 0.5}
    module = Classifier(net, optim={"_target_": "torch.optim.SGD", "lr": 0.1, "scheduler": step})
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
    lrs = []
    for _ in range(7):
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()  # the order of an epoch (torch warns otherwise)
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])
    # any torch optimizer, with an argument the schema does not list (+optim.alpha=...)
    opt = Classifier(net, optim={"_target_": "torch.optim.RMSprop", "lr": 0.01, "alpha": 0.9}
                     ).configure_optimizers()
    assert type(opt) is torch.optim.RMSprop and opt.param_groups[0]["alpha"] == 0.9
    with pytest.raises(ConfigError, match=r"set optim\.momentum=null"):  # Adam takes none
        Classifier(net, optim={"_target_": "torch.optim.Adam", "momentum": 0.9}
                   ).configure_optimizers()
