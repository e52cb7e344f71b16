"""``python -m memorization.scores``: per-example memorization and C-scores from M models
trained on random subsets of the (corrupted) training set (estimator.py has the definitions).

The job. The training set is the DataModule's, corrupted as in a normal job (``noise``); every
model k = 0..M-1 (M = ``scores.models`` x len(``scores.ratios``); model k has ratio
``ratios[k % R]``) trains for ``scores.epochs`` epochs on its subset (masks.py: drawn from
(seed, k)), with weights and batch order from (seed, k) too, and then predicts every training
and test example. The models train ``trainer.replicas`` at a time as one stacked fit
(engine.fit_stacked: loop or vmap, ``scores.mode``); in loop mode a model's predictions are
bitwise those it would get trained alone, so the scores do not depend on the chunk size.
``scores.precision`` (bf16-mixed: the training steps under autocast) and
``scores.matmul_precision`` (high: TF32) are for a GPU; the predictions run in float32.

Resume. Each chunk of models lands atomically in ``chunks/`` (chunks.py) and the outputs are
rewritten from every landed chunk after each one (``summary.json`` says how many models it
holds and whether that is all of them). A rerun in the folder trains only the models no chunk
holds; raising ``scores.models`` trains the new ones; ``trainer.replicas``, ``scores.mode``
and ``scores.device`` may change between runs, any other setting is refused (one line), and
``resume=false`` starts over. ``metrics.json`` is written last, when every model has landed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from memorization.base.errors import ConfigError, Refusal
from memorization.base.io import say, write_json_atomic
from memorization.config.scores import ScoresConfig
from memorization.engine import trainer as engine
from memorization.jobs.folder import FolderRules
from memorization.studies import common
from memorization.studies.scores import chunks as store
from memorization.studies.scores import report
from memorization.studies.scores.masks import ORDER, WEIGHTS, model_seed, subset_masks

# what may differ between the runs that fill one folder: how the models are trained at once,
# where, and how many there are (each model's subset, weights and order do not depend on it)
RULES = FolderRules("the models of a scores job", free=(
    "scores.models", "scores.mode", "scores.device", "scores.top", "trainer.replicas"))
OUTPUTS = ("scores.csv", "scores_test.csv", "summary.json", *report.FIGURES)


def validate(cfg: DictConfig) -> ScoresConfig:
    """The studies' checks (the groups, the noise against the data), the ``scores`` node, and
    what one stacked fit of plain tensors cannot do."""
    from memorization.config.replicas import ELEMENTWISE, replica_count

    sc: ScoresConfig = common.validate_study(cfg, "scores")
    size = replica_count(cfg)
    aug = cfg.data.get("augment") or {}
    if aug.get("crop_padding") or aug.get("hflip") or aug.get("rotation"):
        raise ConfigError("data.augment is not applied by the scores job (its models train on "
                          "the tensors as they are); turn it off (crop_padding=0, hflip=false, "
                          "rotation=0)")
    schedule = str((cfg.optim.get("scheduler") or {}).get("_target_") or "")
    if "Plateau" in schedule:
        raise ConfigError("optim.scheduler: ReduceLROnPlateau watches a metric the scores job "
                          "does not compute; use an epoch schedule (StepLR, ExponentialLR)")
    if size > 1:
        target = str(cfg.optim.get("_target_"))
        if target not in ELEMENTWISE:
            raise ConfigError(f"optim._target_={target} is not known to step each parameter "
                              "elementwise, which one optimizer over trainer.replicas models "
                              "needs; use SGD or Adam, or trainer.replicas=1")
        for key in ("batchnorm", "dropout", "input_dropout", "input_noise"):
            if cfg.model.get(key):
                raise ConfigError(f"model.{key}={cfg.model.get(key)} is not stacked (it keeps "
                                  "statistics or draws random numbers per network); set it "
                                  "off or trainer.replicas=1")
    return sc


def job(run, cfg: DictConfig) -> dict:
    """The folder's rules (module docstring), then ``run(cfg)``."""
    import json

    from memorization.jobs.folder import resolved_dict, settings_refusal, start_fresh

    out, resolved = common.output_dir(), resolved_dict(cfg)
    chunks = store.landed(out)
    if not cfg.get("resume", True):
        if chunks:
            say(f"start over {out}: resume=false removes its {len(chunks)} chunk(s)")
        shutil.rmtree(out / store.FOLDER, ignore_errors=True)
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    else:
        settings_refusal(out, resolved, RULES, holds=bool(chunks)
                         or (out / "metrics.json").is_file())
        done = json.loads((out / "metrics.json").read_text()) \
            if (out / "metrics.json").is_file() else None
        if done is not None and done.get("models_planned") == resolved["scores"]["models"] * \
                len(resolved["scores"]["ratios"]):
            say(f"skip {out}: its {done['models_planned']} models landed before (its "
                "metrics.json); scores.models=<more> adds models, resume=false starts over")
            return done
    start_fresh(out, resolved)
    return run(cfg)


def train_chunk(cfg: DictConfig, sc: ScoresConfig, models: list[int], train: dict,
                test: dict, optim, after_epoch=None) -> dict[str, torch.Tensor]:
    """The chunk of ``models`` (one ratio): their subsets, one stacked fit, their
    predictions on every training and test example (int16, on the device).
    ``after_epoch(e, None)``: called after each epoch of the fit (the progress bar)."""
    x, y = train["x"], train["y"]
    n, device = len(y), y.device
    masks = subset_masks(n, sc.ratio_of(models[0]), cfg.seed, models, device)
    # every row holds m examples: nonzero's row-major order gives each row's, in index order
    subsets = masks.nonzero()[:, 1].reshape(len(models), -1)
    k = int(train["num_classes"])
    nets = [common.build_net(cfg, x.shape[1:], k, device, seed=model_seed(cfg.seed, j, WEIGHTS))
            for j in models]
    orders = [engine.seeded_orders(subsets.shape[1], model_seed(cfg.seed, j, ORDER))
              for j in models]
    engine.fit_stacked(nets, optim, x, y, subsets, epochs=sc.epochs,
                       batch_size=cfg.data.batch_size, orders=orders, mode=sc.mode,
                       precision=sc.precision, after_epoch=after_epoch)
    size = cfg.data.get("eval_batch_size") or 1024
    ratios = torch.full((len(models),), sc.ratio_of(models[0]), dtype=torch.float64)
    return {"models": torch.tensor(models), "ratios": ratios,
            "included": masks,
            "pred_train": engine.predict_stacked(nets, x, sc.mode, size).to(torch.int16),
            "pred_test": engine.predict_stacked(nets, test["x"], sc.mode, size).to(torch.int16)}


def run(cfg: DictConfig) -> dict:
    from memorization.base.accel import apply_matmul_precision
    from memorization.config.replicas import replica_count
    from memorization.jobs.validate import build

    sc = validate(cfg)
    common.apply_job_threads(cfg)
    apply_matmul_precision(sc.matmul_precision)
    device, out, started = common.device_of(sc.device), common.output_dir(), time.time()
    train = common.load_examples(cfg, "train", None, device)
    test = common.load_examples(cfg, "test", None, device)
    optim, size = build(cfg, "optim"), replica_count(cfg)
    landed = store.load_chunks(out)
    if landed is not None:
        _check_landed(landed, sc, len(train["y"]), len(test["y"]), out)
        landed = landed.first(sc.total)
    have = set() if landed is None else set(landed.models.tolist())
    todo = store.plan([j for j in range(sc.total) if j not in have], sc.ratio_of, size)
    params = sum(p.numel() for p in common.build_net(
        cfg, train["x"].shape[1:], int(train["num_classes"]), device).parameters())
    say(f"scores: {sc.total} models ({sc.models} at each subset ratio "
        f"{', '.join(f'{r:g}' for r in sc.ratios)}) of {params} parameters, {sc.epochs} "
        f"epoch(s) each, on {cfg.data.source} ({len(train['y'])} training examples, "
        f"{int(train['corrupted'].sum())} corrupted by {cfg.noise.name} p={cfg.noise.p}; "
        f"{len(test['y'])} test); {size} at a time on {device}; {len(have)} landed before")
    # the bar moves by a chunk's share each epoch: a chunk can take hours on a CPU
    bar = tqdm(total=sc.total, initial=len(have), unit="model", desc="models",
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total} "
               "[{elapsed}<{remaining}{postfix}]")
    for models in todo:
        start, share = bar.n, len(models) / sc.epochs

        def advance(_epoch, _loss, share=share) -> None:  # None: never stops the fit
            bar.update(share)

        arrays = train_chunk(cfg, sc, models, train, test, optim, advance)
        store.save_chunk(out, store.next_index(out), **arrays)
        landed = store.load_chunks(out).first(sc.total)
        summary = report.write(out, sc, landed, train, test, partial=True)
        auc = summary["auroc_mem"]
        bar.set_postfix(auroc="-" if auc is None else f"{auc:.3f}", refresh=False)
        bar.n = start + len(models)  # exact again, whatever the epochs' shares summed to
        bar.refresh()
    bar.close()
    summary = report.write(out, sc, landed, train, test, partial=False)
    figures = report.figures(out, sc, landed, train, test)
    summary["seconds"] = round(time.time() - started, 2)
    common.log_to_wandb(cfg, out, "models", report.history(sc, landed, train), figures,
                        summary)
    write_json_atomic(out / "metrics.json", summary)  # last: every model landed
    say(report.readable(summary, out))
    return summary


def _check_landed(landed: store.Chunks, sc: ScoresConfig, n: int, t: int, out: Path) -> None:
    if landed.included.shape[1] != n or landed.pred_test.shape[1] != t:
        raise Refusal(f"{out / store.FOLDER} holds models of {landed.included.shape[1]} "
                      f"training and {landed.pred_test.shape[1]} test examples, this job has "
                      f"{n} and {t}: resume=false starts over, or choose another folder")
    want = torch.tensor([sc.ratio_of(int(j)) for j in landed.models], dtype=landed.ratios.dtype)
    if not torch.allclose(landed.ratios, want):
        raise Refusal(f"{out / store.FOLDER} holds models of other subset ratios than "
                      f"scores.ratios={sc.ratios}: resume=false starts over, or choose another "
                      "folder")
