"""``python -m memorization.sensitivity``: Arpit et al.'s loss sensitivity and its Gini
coefficient over training (Sec. 3.2, Figs. 3-4); the measure itself: studies/gradients.py.

The paper's setting: "Figure 3 and 4 were obtained by training a fully-connected network with 2
layers of 16 units on 1000 downscaled 14 x 14 MNIST digits using SGD" (conf/experiment/
arpit_loss_sensitivity_mnist.yaml). It states neither the learning rate, the batch size, the
number of steps T nor how often g_x^t was taken; ours are in :class:`SensitivityConfig`.

One job: the DataModule's (corrupted, normalized) training split of ``data.train_size``
examples, downscaled, trained by plain SGD written functionally (torch.func) for ``steps``
updates; every ``every`` updates, g_x^t for every example by backpropagating through all t
updates so far, and the Gini coefficient over examples of g-bar_x (the mean of the recorded
g_x^t up to that step: the paper's T is the step plotted) and of g_x^t alone.
``method=input_grad_norm`` is the cheap stand-in for big models, not the paper's measure: the
network is trained normally (any optimizer, whole split) and at every epoch end each example's
own input-gradient L1 norm is taken (no unrolling); its Gini likewise.

Writes into the job folder: ``gini.csv`` (step, epoch, gini of g-bar, gini of the step's g,
training loss and accuracy), ``per_example.csv`` (index in the DataModule's training split,
labels, corrupted, g-bar, last g), ``sensitivity.pt`` (every recorded g, g-bar, the class x
class matrix), ``gini.png`` (as Fig. 3), ``class_sensitivity.png`` (as Fig. 4),
``metrics.json``; a sweep also gets ``gini.png`` in its folder with a line per job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from memorization.base.errors import ConfigError
from memorization.base.io import atomic_path, say, write_json_atomic
from memorization.config.studies import METHODS, SensitivityConfig  # noqa: F401  (re-exported)
from memorization.engine import trainer as engine
from memorization.studies import common
from memorization.studies.gradients import (
    SGD,
    batch_schedule,
    gini,
    input_grad_norm,
    loss_sensitivity,
)


def _sgd(cfg: DictConfig) -> SGD:
    """The unrolled updates' SGD from the optim group; only torch.optim.SGD unrolls here."""
    o = cfg.optim
    if str(o._target_) != "torch.optim.SGD" or o.get("nesterov"):
        raise ConfigError(f"sensitivity.method=unrolled unrolls plain SGD (the paper's), not "
                          f"optim._target_={o._target_}{' with nesterov' * bool(o.get('nesterov'))}"
                          "; use optim=sgd, or sensitivity.method=input_grad_norm")
    return SGD(float(o.lr), float(o.get("momentum") or 0.0), float(o.get("weight_decay") or 0.0))


def _unrolled(cfg, sc: SensitivityConfig, net, x, y, k: int):
    n = len(y)
    batches = batch_schedule(n, sc.batch_size, sc.steps, cfg.seed)
    seen = torch.zeros(n, dtype=torch.bool)
    # the class x class matrix: only for a handful of classes (not one class per example)
    classes = k if sc.class_every and k <= 100 else None
    records = loss_sensitivity(
        net, x, y, batches, _sgd(cfg), lambda t: t % sc.every == 0 or t == sc.steps,
        direct=sc.direct, num_classes=classes,
        with_classes=lambda t: t % sc.class_every == 0 or t == sc.steps)
    rows, gs, class_sum, class_n, last = [], [], None, 0, 0
    g_sum = torch.zeros(n, dtype=torch.float64, device=x.device)
    with tqdm(total=sc.steps, desc="unrolled SGD", unit="step", dynamic_ncols=True) as bar:
        for rec in records:
            for b in batches[last:rec.step]:
                seen[b] = True
            bar.update(rec.step - last)
            last = rec.step
            g_sum += rec.g
            gs.append(rec.g.float().cpu())
            if rec.classes is not None:
                class_sum = rec.classes if class_sum is None else class_sum + rec.classes
                class_n += 1
            g_bar = g_sum / len(gs)
            rows.append({"step": rec.step, "epoch": rec.step * sc.batch_size / n,
                         "gini": float(gini(g_bar)), "gini_step": float(gini(rec.g)),
                         "seen": float(seen.float().mean()), "train_loss": rec.loss,
                         "train_acc": rec.acc})
            bar.set_postfix(gini=f"{rows[-1]['gini']:.3f}", loss=f"{rec.loss:.3f}")
    matrix = None if class_sum is None else (class_sum / class_n).cpu()
    return rows, torch.stack(gs), matrix


def _input_grads(cfg, sc: SensitivityConfig, net, x, y):
    """Plain training with the configured optimizer; the input-gradient norms at epoch 0 and
    after every epoch."""
    from memorization.jobs.validate import build

    n, rows, gs = len(y), [], []

    def note(epoch: int, _loss=None) -> None:
        g = input_grad_norm(net, x, y)
        gs.append(g.float().cpu())
        g_bar = torch.stack(gs).mean(0)
        acc, loss = engine.evaluate(net, x, y, batch_size=n)
        rows.append({"step": epoch * -(-n // sc.batch_size), "epoch": epoch,
                     "gini": float(gini(g_bar)), "gini_step": float(gini(g)),
                     "seen": float(epoch > 0), "train_loss": float(loss),
                     "train_acc": float(acc)})
        bar.update(epoch > 0)

    net.train()
    with tqdm(total=sc.epochs, desc="epochs", unit="epoch", dynamic_ncols=True) as bar:
        note(0)
        engine.fit_network(net, build(cfg, "optim"), x, y, epochs=sc.epochs,
                           batch_size=sc.batch_size, seed=cfg.seed, after_epoch=note)
    return rows, torch.stack(gs), None


def run(cfg: DictConfig) -> dict:
    sc: SensitivityConfig = common.validate_study(cfg, "sensitivity")
    common.apply_job_threads(cfg)
    device, out, started = common.device_of(sc.device), common.output_dir(), time.time()
    data = common.load_examples(cfg, "train", sc.image_size, device)
    x, y, k = data["x"], data["y"], int(data["num_classes"])
    n = len(y)
    if sc.unique_labels:  # Fig. 3 right: "as many classes as examples"
        y, k = torch.arange(n, device=device), n
    net = common.build_net(cfg, x.shape[1:], k, device, seed=cfg.seed)
    say(f"loss sensitivity ({sc.method}): {cfg.data.source} {n} training examples "
        f"{list(x.shape[1:])}, {k} classes, {int(data['corrupted'].sum())} corrupted "
        f"(noise {cfg.noise.name} p={cfg.noise.p}); {sum(p.numel() for p in net.parameters())} "
        f"parameters, batch {sc.batch_size}, "
        + (f"{sc.steps} steps, g recorded every {sc.every}" if sc.method == "unrolled"
           else f"{sc.epochs} epochs"))
    if sc.method == "unrolled":
        rows, gs, matrix = _unrolled(cfg, sc, net, x, y, k)
    else:
        rows, gs, matrix = _input_grads(cfg, sc, net, x, y)
    g_bar = gs.double().mean(0)
    table = pd.DataFrame(rows)
    common.write_csv(out / "gini.csv", table)
    cpu = {key: v.cpu() for key, v in data.items()}
    common.write_csv(out / "per_example.csv", pd.DataFrame({
        "index": cpu["index"].numpy(), "label": y.cpu().numpy(), "true_label":
        cpu["y_true"].numpy(), "corrupted": cpu["corrupted"].numpy(), "g_bar": g_bar.numpy(),
        "g_last": gs[-1].numpy()}))
    with atomic_path(out / "sensitivity.pt") as tmp:
        torch.save({"method": sc.method, "steps": table["step"].tolist(), "g": gs,
                    "g_bar": g_bar, "index": cpu["index"], "label": y.cpu(),
                    "classes": matrix}, tmp)
    _figures(out, table, matrix, sc.method, common.job_label(out))
    last = rows[-1]
    summary = {"method": sc.method, "n_train": n, "num_classes": k,
               "corrupted": int(cpu["corrupted"].sum()), "noise": cfg.noise.name,
               "noise_p": float(cfg.noise.p), "steps": int(last["step"]),
               "epochs": float(last["epoch"]), "gini": last["gini"],
               "gini_step": last["gini_step"], "train_loss": common.finite(last["train_loss"]),
               "train_acc": last["train_acc"], "seconds": round(time.time() - started, 2)}
    common.log_to_wandb(cfg, out, "step" if sc.method == "unrolled" else "epoch",
                        [{k: common.finite(v) if isinstance(v, float) else v
                          for k, v in row.items()} for row in rows],
                        [out / "gini.png", out / "class_sensitivity.png"], summary)
    write_json_atomic(out / "metrics.json", summary)  # last: the job is finished
    say(f"Gini of g-bar {last['gini']:.3f} after {last['step']} steps (train acc "
        f"{last['train_acc']:.1%}); outputs: {out}")
    return summary


def _figures(out: Path, table: pd.DataFrame, matrix, method: str, label: str) -> None:
    fig, (ax,) = common.new_figure()
    x = "step" if method == "unrolled" else "epoch"
    ax.plot(table[x], table["gini"], label="Gini of g-bar (mean up to the step)")
    ax.plot(table[x], table["gini_step"], ls="--", alpha=0.6, label="Gini of that step's g")
    ax.set(xlabel=f"{x}s" if x == "step" else "epoch", ylabel="Gini coefficient", ylim=(0, 1),
           title=f"loss sensitivity ({method}): {label}")
    ax.legend(fontsize=8)
    common.save_figure(fig, out / "gini.png")
    if matrix is None:
        return
    fig, (ax,) = common.new_figure(width=5, height=4.5)
    m = matrix.double().clamp_min(1e-30).log10().numpy()
    im = ax.imshow(m, cmap="viridis")
    fig.colorbar(im, ax=ax, label="log10 g-bar(i, j)")
    ax.set(xlabel="class j of the training examples x", ylabel="class i of the loss term",
           title=f"class x class loss sensitivity: {label}")
    common.save_figure(fig, out / "class_sensitivity.png")


def sweep_figure(sweep_dir: Path) -> Path | None:
    """Every finished job's Gini of g-bar in one figure (Fig. 3): ``SWEEP/gini.png``."""
    jobs = common.finished_jobs(sweep_dir, "gini.csv")
    if not jobs:
        return None
    fig, (ax,) = common.new_figure(width=6.5)
    for job in jobs:
        t = pd.read_csv(job / "gini.csv")
        method = json.loads((job / "metrics.json").read_text()).get("method")
        x = "step" if method == "unrolled" else "epoch"
        ax.plot(t[x], t["gini"], label=common.job_label(job))
    ax.set(xlabel="training progress (steps, or epochs for input_grad_norm)",
           ylabel="Gini coefficient of g-bar", ylim=(0, 1), title="loss sensitivity")
    ax.legend(fontsize=8)
    path = sweep_dir / "gini.png"
    common.save_figure(fig, path)
    return path

