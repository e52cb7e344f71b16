"""The relabel-and-retrain stage itself (the package docstring has the procedure and our
readings): :func:`run_relabel` computes it, :func:`log_relabel` and :func:`format_relabel`
report it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from memorization.base.io import flat_keys, pct, say
from memorization.config.relabel import RelabelConfig
from memorization.engine.optim import OptimConfig
from memorization.engine.trainer import evaluate
from memorization.jobs.relabel.masc_layers import LABELLINGS, layer_predictions, probe_names
from memorization.jobs.relabel.retrain import retrain

_pct = partial(pct, none="-")  # summary lines: "-" for a missing value


def split_test(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The test set's indices in two parts from a permutation seeded by ``seed`` alone (on the
    CPU, so every device gets the same): (held out, ``round(fraction * n)`` samples; the rest),
    each sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(max(round(fraction * n), 1), n - 1)
    return perm[:k].sort().values, perm[k:].sort().values


def label_changes(y_old: torch.Tensor, y_new: torch.Tensor, y_true: torch.Tensor) -> dict:
    """Wrong training labels (against the true ones) before and after relabeling, as counts and
    fractions: ``fixed`` were wrong and are right, ``broken`` were right and are wrong, so
    wrong_after = wrong_before - fixed + broken exactly. One host sync."""
    wrong_old, wrong_new = y_old != y_true, y_new != y_true
    counts = torch.stack([wrong_old.sum(), wrong_new.sum(), (wrong_old & ~wrong_new).sum(),
                          (~wrong_old & wrong_new).sum(), (y_old != y_new).sum()]).tolist()
    n = max(y_old.numel(), 1)
    names = ("wrong_before", "wrong_after", "fixed", "broken", "changed")
    return ({f"n_{k}": c for k, c in zip(names, counts, strict=True)}
            | {k: c / n for k, c in zip(names, counts, strict=True)})


def _acc(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred == y).double().mean()


def _per_layer(preds, layers: list[str], lab: str, train: dict, test_y: torch.Tensor,
               parts: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """MASC accuracies per layer of one labelling: on the test parts, and on the training set
    against the training and the true labels (one host copy for all)."""
    rows = {}
    for name in layers:
        tr, te = preds.train[(lab, name)], preds.test[(lab, name)]
        rows[name] = torch.stack([*(_acc(te[i], test_y[i]) for i in parts.values()),
                                  _acc(tr, train["y"]), _acc(tr, train["y_true"])])
    keys = [f"{p}_acc" for p in parts] + ["train_acc", "train_true_acc"]
    table = torch.stack(list(rows.values())).tolist() if rows else []
    return {k: {name: vals[i] for name, vals in zip(rows, table, strict=True)}
            for i, k in enumerate(keys)}


def run_relabel(cfg: RelabelConfig, net: nn.Module, dm, optim: OptimConfig, loss_fn: Callable,
                *, init_state: dict | None = None, device: torch.device | str = "cpu",
                seed: int = 0, progress: Callable[[str], None] | None = say) -> dict:
    """The stage on the trained ``net`` (not changed: each retraining starts from a copy) and
    the data module ``dm`` (set up); returns the ``relabel`` node of metrics.json.
    ``init_state``: the network's initial weights, for the random-initialization control."""
    device = torch.device(device)
    train = dm.splits["train"].tensors
    test = dm.splits["test"].tensors
    k, bs, ebs = dm.cfg.num_classes, dm.cfg.batch_size, dm.cfg.eval_batch_size
    val_idx, rest_idx = (i.to(test["y"].device) for i in
                         split_test(len(test["y"]), cfg.val_fraction, cfg.split_seed))
    parts = {"val": val_idx, "test": rest_idx}
    val = (test["x"][val_idx], test["y"][val_idx])
    rest = (test["x"][rest_idx], test["y"][rest_idx])
    names = probe_names(net, cfg.layers)
    depth = {ly.name: i for i, ly in enumerate(net.probe_layers())}  # 0: the input
    trained = copy.deepcopy(net).to(device)
    opts = dict(variance=cfg.variance, batch_size=ebs, device=device,
                max_gram_gb=cfg.max_gram_gb, max_cache_gb=cfg.max_cache_gb)
    preds = layer_predictions(trained, names, train, test["x"], k, **opts)
    if not preds.layers:
        from memorization.base.errors import ConfigError

        raise ConfigError("relabel: MASC could fit no layer (all too wide for "
                          f"relabel.max_gram_gb={cfg.max_gram_gb}); raise it")
    before = float(evaluate(trained, *rest, loss_fn, ebs, device)[0])
    out: dict = {
        "split": {"seed": cfg.split_seed, "n_val": len(val_idx), "n_test": len(rest_idx),
                  "n_train": len(train["y"])},
        "model": {"test_acc_before": before},
        "layers": preds.layers, "skipped_layers": preds.skipped,
        "settings": {"max_epochs": cfg.max_epochs, "patience": cfg.patience,
                     "monitor": cfg.monitor, "variance": cfg.variance},
    }
    for lab in LABELLINGS:
        per = _per_layer(preds, preds.layers, lab, train, test["y"], parts)
        # the best layer by hits on the held-out part; the first (shallowest) on a tie
        hits = torch.stack([(preds.test[(lab, n)][val_idx] == val[1]).sum()
                            for n in preds.layers])
        layer = preds.layers[int(hits.argmax())]  # torch returns the first maximal index
        pred = preds.train[(lab, layer)]
        new_y = torch.where(pred >= 0, pred, train["y"])  # a zero vector keeps its old label
        node = {"best_layer": layer, "best_layer_index": depth[layer],
                "masc_val_acc": per["val_acc"][layer], "masc_test_acc": per["test_acc"][layer],
                "n_zero": int((pred < 0).sum())}
        node |= label_changes(train["y"], new_y, train["y_true"])

        def show(row: dict, lab: str = lab) -> None:
            if progress is not None:
                progress(f"relabel {lab} epoch {row['epoch']}/{cfg.max_epochs}: loss "
                         f"{row['train_loss']:.3f} · held-out acc {100 * row['val_acc']:.1f}% "
                         f"loss {row['val_loss']:.3f} · test acc {100 * row['test_acc']:.1f}% "
                         f"· best epoch {row['best_epoch']}")

        res = retrain(copy.deepcopy(trained), train["x"], new_y, val, rest, optim, loss_fn,
                      max_epochs=cfg.max_epochs, patience=cfg.patience, monitor=cfg.monitor,
                      batch_size=bs, eval_batch_size=ebs, seed=seed, device=device,
                      progress=show)
        after_acc, after_loss = evaluate(res.net, *val, loss_fn, ebs, device)
        node |= {"test_acc_after": float(evaluate(res.net, *rest, loss_fn, ebs, device)[0]),
                 "val_acc_after": float(after_acc), "val_loss_after": float(after_loss),
                 "best_epoch": res.best_epoch, "epochs": len(res.curve),
                 "stopped_early": res.stopped_early, "curve": res.curve,
                 "layer_val_acc": per["val_acc"], "layer_test_acc": per["test_acc"],
                 "layer_train_acc": per["train_acc"],
                 "layer_train_true_acc": per["train_true_acc"],
                 "components": {n: preds.components[f"{lab}/{n}"] for n in preds.layers}}
        node["relabeled"] = new_y  # for relabel.npz (job.py); report_node leaves it out
        out[lab] = node
    if cfg.control and init_state is not None:
        init = copy.deepcopy(trained)
        init.load_state_dict(init_state)
        ip = layer_predictions(init, preds.layers, train, test["x"], k, **opts)
        out["init"] = {lab: {"test": per["test_acc"], "train": per["train_acc"],
                             "train_true": per["train_true_acc"]}
                       for lab in LABELLINGS
                       for per in [_per_layer(ip, ip.layers, lab, train, test["y"], parts)]}
    return out


def report_node(result: dict) -> dict:
    """``result`` without its tensors: what metrics.json holds."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "relabeled"} if isinstance(v, dict)
                else v) for k, v in result.items()}


def scalars(node: dict) -> dict[str, float]:
    """The numbers of a ``relabel`` node as flat ``relabel/...`` keys (what the loggers get;
    lists such as the per-epoch curve stay in metrics.json)."""
    return {k: float(v) for k, v in flat_keys(node, "relabel").items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def log_relabel(loggers: list, node: dict) -> None:
    """The stage's numbers to every logger: W&B's run summary, a last row of history.csv."""
    values = scalars(node)
    for logger in loggers:
        if hasattr(logger, "log_summary"):
            logger.log_summary(values)
        else:
            logger.log_metrics(values)
        if hasattr(logger, "save"):
            logger.save()



def format_relabel(node: dict) -> str:
    """The stage's result as a small table, printed at the end of the job."""
    s = node["split"]
    cols = [(lab, node[lab]) for lab in LABELLINGS if lab in node]
    rows = [
        ("best layer (held-out MASC acc)",
         [f"{n['best_layer']} ({_pct(n['masc_val_acc'])})" for _, n in cols]),
        ("MASC test acc, best layer", [_pct(n["masc_test_acc"]) for _, n in cols]),
        ("model test acc before", [_pct(node["model"]["test_acc_before"]) for _ in cols]),
        ("model test acc after retrain", [_pct(n["test_acc_after"]) for _, n in cols]),
        ("retrain epochs (best)",
         [f"{n['epochs']} ({n['best_epoch']}){' stopped' if n['stopped_early'] else ''}"
          for _, n in cols]),
        ("wrong training labels", [f"{_pct(n['wrong_before'])} -> {_pct(n['wrong_after'])}"
                                   for _, n in cols]),
        ("  fixed / newly broken", [f"{_pct(n['fixed'])} / {_pct(n['broken'])}"
                                    for _, n in cols]),
    ]
    w = max(len(r[0]) for r in rows)
    cw = max([len(c) for _, cells in rows for c in cells] + [20])
    lines = ["", f"=== MASC relabel and retrain (test set split seed {s['seed']}: "
                 f"{s['n_val']} held out, {s['n_test']} reported) ===",
             f"{'':<{w}}  " + "  ".join(f"{h:>{cw}}" for h in
                                       ("subspaces: training labels", "true labels")[:len(cols)])]
    lines += [f"{name:<{w}}  " + "  ".join(f"{c:>{cw}}" for c in cells) for name, cells in rows]
    init = node.get("init")
    if init:
        layers = node["layers"]
        lines.append("random init, MASC test acc per layer: " + ", ".join(
            f"{la} {_pct(init['masc']['test'].get(la))}/{_pct(init['masc_true']['test'].get(la))}"
            for la in layers) + " (training / true labels)")
    if node.get("skipped_layers"):
        lines.append(f"layers skipped (too wide): {', '.join(node['skipped_layers'])}")
    return "\n".join(lines) + "\n"
