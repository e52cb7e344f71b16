"""``python -m memorization.report``: fabricated sweep folders (the exact files a multirun
leaves: .hydra/, config_resolved.yaml, history.csv, metrics.json, multirun.yaml) read back into
tables, the Markdown summary and the figures; values checked by hand."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from memorization.cli.report import main
from memorization.cli.report.data import load_sweep
from memorization.cli.report.figures import FIGURES

LAYERS = ("input", "fc1", "fc2")  # depth 0, 1, 2
EPOCHS = 6
N_TRAIN = 40
N_CORRUPTED = {0.2: 7, 0.4: 14}  # "7 (17.5%)", "14 (35.0%)"
# Job number -> noise.p, seed, epochs_to_fit (None: not fit), test/acc per epoch, final
# masc/test per layer. Job 3 is still running: 4 epochs, a cut last line, no metrics.json.
JOBS = {
    0: {"p": 0.2, "seed": 0, "fit": 5, "test_acc": [0.5, 0.6, 0.7, 0.8, 0.95, 0.9],
        "masc": (0.6, 0.93, 0.8)},
    1: {"p": 0.2, "seed": 1, "fit": 6, "test_acc": [0.4, 0.5, 0.6, 0.7, 0.75, 0.8],
        "masc": (0.6, 0.7, 0.85)},
    2: {"p": 0.4, "seed": 0, "fit": 4, "test_acc": [0.3, 0.4, 0.5, 0.6, 0.65, 0.7],
        "masc": (0.77, 0.7, 0.65)},
    3: {"p": 0.4, "seed": 1, "fit": None, "test_acc": [0.3, 0.4, 0.5, 0.6],
        "masc": (0.5, 0.5, 0.5)},
}
HEADER = ("| job | noise.p | seed | samples corrupted | epochs to fit | "
          "train acc (training labels) | train acc (true labels) | test acc at fit | "
          "best test acc | best-layer MASC test acc |")
# The table rows by hand: test acc at fit is test/acc at epoch epochs_to_fit (job 0 went on
# training after it fit); best layer is the max of the final masc/test/<layer> over the network's
# layers (never masc_true, never the input, whose 0.77 in job 2 is the highest of its values).
ROWS = {
    "0": ["0.2", "0", "7 (17.5%)", "5", "100.0%", "82.5%", "95.0%", "95.0%", "93.0% (fc1)"],
    "1": ["0.2", "1", "7 (17.5%)", "6", "100.0%", "82.5%", "80.0%", "80.0%", "85.0% (fc2)"],
    "2": ["0.4", "0", "14 (35.0%)", "4", "100.0%", "65.0%", "60.0%", "70.0%", "70.0% (fc1)"],
}


# ---------------------------------------------------------------- fabrication


def _values(p: float, fit: int | None, test_acc: list[float], masc: tuple, epoch: int,
            epochs: int, with_masc: bool = True) -> dict[str, float]:
    """The keys one job logs at ``epoch``: per-layer metrics at even epochs only."""
    acc = min(1.0, 1 - 0.1 * ((fit or epochs + 1) - epoch))
    wrong = N_CORRUPTED.get(p, round(p * N_TRAIN)) / N_TRAIN
    t = test_acc[epoch - 1]
    v = {"train/loss": 1 / epoch, "train/acc": acc, "train/acc_true": acc - wrong,
         "train/acc_clean": acc, "train/acc_corrupted": acc, "train/acc_corrupted_true": 0.05,
         "test/acc": t, "test/loss": 1 - t, "test/acc_best": max(test_acc[:epoch]),
         "gap": acc - t}
    if epoch % 2 == 0:
        for depth, layer in enumerate(LAYERS):
            if depth:
                v[f"cosine/train/{layer}"] = 0.1 * depth + 0.01 * epoch
            v[f"polarization/train/{layer}"] = 0.5 + 0.1 * depth
            if with_masc:
                v[f"masc/train/{layer}"] = 1.0  # above every test value: must not count
                v[f"masc/test/{layer}"] = masc[depth] - 0.01 * (epochs - epoch)
                v[f"masc_true/test/{layer}"] = 0.99  # likewise
        v["csr/test"] = 0.1 / epoch
    return v


def _row(epoch: int, key: str, value: float) -> list:
    """A history.csv row (memorization/loggers/history.py) of one logged key."""
    parts = key.split("/")
    if len(parts) == 3:
        metric, split, layer = parts
    elif len(parts) == 2:
        (split, metric), layer = (parts if parts[0] in ("train", "test") else parts[::-1]), ""
    else:
        metric, split, layer = key, "", ""
    return [epoch, split, layer, LAYERS.index(layer) if layer else "", metric, repr(float(value))]


def _yaml(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False))


def make_job(folder: Path, p: float, seed: int, fit: int | None, test_acc: list[float],
             masc: tuple = (0.5, 0.5, 0.5), epochs: int | None = None, finished: bool = True,
             with_masc: bool = True, overrides: list[str] | None = None) -> int:
    """One job folder as a run writes it; returns how many complete history rows it holds."""
    epochs = epochs or len(test_acc)
    config = {"seed": seed, "noise": {"name": "label_flip", "p": p, "seed": 0},
              "data": {"source": "digits"}, "model": {"depth": 2, "width": 16}, "logger": {}}
    overrides = overrides if overrides is not None else [f"noise.p={p}", f"seed={seed}"]
    _yaml(folder / ".hydra/config.yaml", config)
    _yaml(folder / ".hydra/overrides.yaml", overrides)
    choices = {"experiment": None, "data": "digits", "model": "mlp", "noise": "label_flip",
               "logger": "none", "hydra/launcher": "basic"}
    _yaml(folder / ".hydra/hydra.yaml", {"hydra": {
        "runtime": {"output_dir": str(folder), "choices": choices},
        "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": overrides}}})
    _yaml(folder / "config_resolved.yaml", config)
    rows, last = [], {}
    for epoch in range(1, epochs + 1):
        last = _values(p, fit, test_acc, masc, epoch, epochs, with_masc)
        rows += [_row(epoch, k, v) for k, v in last.items()]
    if finished and fit is not None:
        rows.append(_row(epochs, "epochs_to_fit", fit))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", "split", "layer", "depth", "metric", "value"])
    writer.writerows(rows)
    text = buf.getvalue()
    if not finished:
        text += f"{epochs + 1},train,,,lo"  # a write cut off midway: no newline
    (folder / "history.csv").write_text(text)
    if finished:
        n = N_CORRUPTED.get(p, round(p * N_TRAIN))
        metrics = {"epochs": epochs, "epochs_to_fit": fit, "final": last,
                   "corruption": {"n_corrupted": n, "n_train": N_TRAIN,
                                  "fraction_corrupted": n / N_TRAIN, "noise": "label_flip",
                                  "p": p, "seed": 0},
                   "interrupted": False}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return len(rows)


def make_sweep(root: Path, jobs: dict = JOBS, task: list[str] | None = None,
               **kw) -> dict[str, int]:
    """A multirun folder ``root`` with job folders 0..N-1 and multirun.yaml; returns each
    job's complete history rows."""
    counts = {}
    for num, spec in jobs.items():
        counts[str(num)] = make_job(root / str(num), spec["p"], spec["seed"], spec["fit"],
                                    spec["test_acc"], spec["masc"],
                                    finished=spec["fit"] is not None, **kw)
    task = task if task is not None else ["noise.p=0.2,0.4", "seed=0,1"]
    _yaml(root / "multirun.yaml", {"hydra": {
        "mode": "MULTIRUN", "sweep": {"dir": str(root), "subdir": "${hydra.job.num}"},
        "overrides": {"hydra": [f"hydra.sweep.dir={root}", "hydra.mode=MULTIRUN"],
                      "task": task}}})
    return counts


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def table_rows(text: str) -> dict[str, list[str]]:
    """job -> cells of the Markdown table's data rows."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| job ", "| ---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


# ---------------------------------------------------------------- the 4-job sweep


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the fabricated sweep, written once: (sweep dir, history row counts,
    exit code, stdout, stderr)."""
    sweep = tmp_path_factory.mktemp("multirun") / "2025-01-01" / "12-00-00"
    counts = make_sweep(sweep)
    rc, out, err = run_main([str(sweep)])
    return sweep, counts, rc, out, err


def test_prints_table_of_finished_jobs(report):
    sweep, _, rc, out, _ = report
    assert rc == 0
    lines = out.rstrip("\n").splitlines()
    assert HEADER in lines
    assert lines.index(HEADER) + 1 < len(lines) and lines[lines.index(HEADER) + 1].startswith(
        "| --- |")
    assert sorted(table_rows(out)) == ["0", "1", "2"]  # finished jobs only
    unfinished = [line for line in lines if "3 (unfinished)" in line]
    assert len(unfinished) == 1 and "not finished" in unfinished[0]
    # the table (with its line on unfinished jobs) is the last thing printed
    assert lines[-1] == unfinished[0]
    assert lines[-2] == "" and lines[-3].startswith("| 2 |")
    assert f"in {sweep / 'report'}" in out
    assert "skipped" not in out  # every figure has its data
    assert not (sweep / "report" / "wandb").exists()


def test_history_csv_every_complete_row(report):
    sweep, counts, *_ = report
    df = pd.read_csv(sweep / "report/history.csv", keep_default_na=False,
                     na_values={"value": ["nan"], "depth": [""]}, dtype={"job": str})
    assert list(df.columns) == ["job", "status", "noise.p", "seed", "epoch", "split", "layer",
                                "depth", "metric", "value"]
    assert len(df) == sum(counts.values())  # job 3's cut line dropped
    assert df.groupby("job").size().to_dict() == counts
    assert set(df.loc[df["job"] == "3", "status"]) == {"unfinished"}
    assert set(df.loc[df["job"] != "3", "status"]) == {"finished"}
    assert df.loc[df["job"] == "3", "epoch"].max() == 4
    # the swept parameters are per job, from the config
    assert df.groupby("job")["noise.p"].first().to_dict() == {"0": 0.2, "1": 0.2, "2": 0.4,
                                                              "3": 0.4}
    acc = df[(df["job"] == "0") & (df["split"] == "test") & (df["metric"] == "acc")]
    assert acc["value"].tolist() == pytest.approx(JOBS[0]["test_acc"])
    fc2 = df[(df["job"] == "1") & (df["metric"] == "masc") & (df["layer"] == "fc2")
             & (df["split"] == "test")]
    assert fc2["depth"].unique().tolist() == [2] and fc2["epoch"].tolist() == [2, 4, 6]


def test_final_csv_one_row_per_job(report):
    sweep, *_ = report
    df = pd.read_csv(sweep / "report/final.csv", dtype={"job": str})
    assert df["job"].tolist() == ["0", "1", "2", "3"]
    assert df["status"].tolist() == ["finished"] * 3 + ["unfinished"]
    assert df["test/acc"].iloc[:3].tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert pd.isna(df["test/acc"].iloc[3])
    assert df["epochs_to_fit"].iloc[:3].tolist() == [5, 6, 4] and pd.isna(df["epochs_to_fit"][3])
    assert df["n_corrupted"].iloc[:3].tolist() == [7, 7, 14]
    assert df["masc/test/fc1"].iloc[0] == pytest.approx(0.93)
    assert df["seed"].tolist() == [0, 1, 0, 1]  # the config's, unfinished job included


def test_summary_md_values_by_hand(report):
    sweep, _, _, out, _ = report
    text = (sweep / "report/summary.md").read_text()
    title = "data=digits · model=mlp · noise=label_flip: noise.p=0.2,0.4 · seed=0,1"
    assert text.startswith(f"# {title}\n")
    assert "4 job(s): 3 finished, 1 unfinished" in text
    assert HEADER in text
    assert table_rows(text) == ROWS
    # what was printed is the same table
    assert text.split("\n\n", 1)[1].rstrip() in out


def test_every_figure_is_a_png(report):
    sweep, *_ = report
    pngs = sorted(p.name for p in (sweep / "report").glob("*.png"))
    assert pngs == sorted(FIGURES)
    for name in pngs:
        data = (sweep / "report" / name).read_bytes()
        assert len(data) > 1000 and data.startswith(b"\x89PNG"), name


def test_no_masc_skips_its_figure(tmp_path):
    sweep = tmp_path / "sweep"
    make_sweep(sweep, with_masc=False)
    rc, out, _ = run_main([str(sweep)])
    assert rc == 0
    assert not (sweep / "report/masc_per_layer.png").exists()
    assert {p.name for p in (sweep / "report").glob("*.png")} == set(FIGURES) - {
        "masc_per_layer.png"}
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("skipped masc_per_layer.png: ")
    assert {r[-1] for r in table_rows(out).values()} == {"–"}  # no best-layer MASC


def test_not_fit_and_interrupted_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    make_sweep(sweep, {**JOBS, 3: {**JOBS[3], "fit": 5, "test_acc": [0.5] * 6}})
    for num, change in ((2, {"epochs_to_fit": None}), (3, {"interrupted": True})):
        path = sweep / str(num) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    rc, out, _ = run_main([str(sweep), "--no-figures"])
    assert rc == 0
    rows = table_rows(out)
    assert sorted(rows) == ["0", "1", "2"]  # interrupted: not in the table
    assert rows["2"][3] == "not fit (6)" and rows["2"][6] == "70.0% (end)"
    assert out.rstrip().splitlines()[-1].endswith("not finished: 3 (interrupted)")
    assert "4 job(s): 3 finished, 1 interrupted" in out
    assert not list((sweep / "report").glob("*.png"))


def test_job_without_history_yet(tmp_path):
    """A running sweep: job 3 has started (config written) but logged nothing yet. The other
    jobs' rows are unchanged (epochs stay whole numbers); so with a header-only history."""
    sweep = tmp_path / "sweep"
    counts = make_sweep(sweep)
    (sweep / "3/history.csv").unlink()
    for header_only in (False, True):
        if header_only:
            (sweep / "2/history.csv").write_text("epoch,split,layer,depth,metric,value\n")
            (sweep / "2/metrics.json").unlink()
        rc, out, _ = run_main([str(sweep), "--no-figures"])
        assert rc == 0 and sorted(table_rows(out)) == ["0", "1", "2"][:3 - header_only]
        lines = (sweep / "report/history.csv").read_text().splitlines()
        assert len(lines) == 1 + counts["0"] + counts["1"] + counts["2"] * (not header_only)
        assert lines[1] == "0,finished,0.2,0,1,train,,,loss,1.0"
        final = pd.read_csv(sweep / "report/final.csv", dtype={"job": str})
        job2 = "unfinished" if header_only else "finished"
        assert final["status"].tolist() == ["finished", "finished", job2, "unfinished"]


def test_job_folders_named_and_numbered(tmp_path):
    """Job folders in number order (2 before 10), named ones after them."""
    sweep = tmp_path / "sweep"
    make_sweep(sweep, {n: JOBS[n % 3] for n in (0, 2, 10)})
    make_job(sweep / "baseline", 0.2, 0, 5, JOBS[0]["test_acc"])
    assert load_sweep([sweep]).jobs["job"].tolist() == ["0", "2", "10", "baseline"]


# ---------------------------------------------------------------- other folders


def test_several_sweep_folders_combine(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_sweep(a, {0: JOBS[0], 1: JOBS[1]}, task=["noise.p=0.2", "seed=0,1"])
    make_sweep(b, {0: JOBS[2], 1: {**JOBS[3], "fit": 5, "test_acc": [0.5] * 6}},
               task=["noise.p=0.4", "seed=0,1"])
    sweep = load_sweep([a, b])
    assert "noise.p" in sweep.swept and "seed" in sweep.swept  # noise.p: overrides differ
    assert sweep.jobs["job"].tolist() == ["a/0", "a/1", "b/0", "b/1"]
    assert sweep.jobs["noise.p"].tolist() == [0.2, 0.2, 0.4, 0.4]
    rc, out, _ = run_main([str(a), str(b), "--no-figures"])
    assert rc == 0
    rows = table_rows(out)
    assert sorted(rows) == ["a/0", "a/1", "b/0", "b/1"]
    assert rows["b/0"][sweep.swept.index("noise.p")] == "0.4"
    assert (a / "report/summary.md").is_file() and not (b / "report").exists()
    hist = pd.read_csv(a / "report/history.csv", dtype={"job": str})
    assert set(hist["job"]) == {"a/0", "a/1", "b/0", "b/1"}


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_no_jobs_is_an_error(tmp_path, capsys, make):
    folder = tmp_path / "nothing"
    if make == "empty":
        (folder / "report").mkdir(parents=True)
        (folder / "multirun.yaml").write_text("hydra: {}\n")
    assert main([str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")


def test_single_run_folder(tmp_path):
    run = tmp_path / "outputs" / "2025-01-01" / "12-00-00"
    make_job(run, 0.4, 0, 4, [0.3, 0.4, 0.5, 0.6, 0.65, 0.7], (0.77, 0.7, 0.65),
             overrides=["noise.p=0.4"])
    rc, out, _ = run_main([str(run)])
    assert rc == 0
    rows = table_rows(out)
    assert rows == {"12-00-00": ROWS["2"][2:]}  # nothing swept: no noise.p, seed columns
    assert "| job | samples corrupted |" in out
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("skipped ")] == [
        "skipped test_acc_vs_noise.png: fewer than two noise levels"]
    assert any(line.startswith("training_loss.png: panel b") for line in lines)
    written = {p.name for p in (run / "report").glob("*.png")}
    assert written == set(FIGURES) - {"test_acc_vs_noise.png"}


def test_fifty_jobs_sixty_epochs(tmp_path):
    """Not a timing assert: a sweep of realistic size completes (time shown with -s)."""
    sweep, epochs, jobs = tmp_path / "big", 60, {}
    for num in range(50):
        p, seed = (0.0, 0.1, 0.2, 0.3, 0.4)[num // 10], num % 10
        test_acc = [min(0.95, 0.3 + 0.01 * e) - 0.3 * p for e in range(1, epochs + 1)]
        jobs[num] = {"p": p, "seed": seed, "fit": 20 + 8 * (num // 10), "test_acc": test_acc,
                     "masc": (0.6, 0.8 - p, 0.7)}
    counts = make_sweep(sweep, jobs, task=["noise.p=0,0.1,0.2,0.3,0.4",
                                           "seed=0,1,2,3,4,5,6,7,8,9"])
    start = time.perf_counter()
    rc, out, _ = run_main([str(sweep)])
    seconds = time.perf_counter() - start
    print(f"\nreport of 50 jobs x {epochs} epochs ({sum(counts.values())} history rows): "
          f"{seconds:.1f} s")
    assert rc == 0
    assert len(table_rows(out)) == 50
    assert len(list((sweep / "report").glob("*.png"))) == len(FIGURES)


def test_hydra_callback_writes_the_report_unless_turned_off(tmp_path, capsys):
    from omegaconf import OmegaConf

    from memorization.cli.sweep import SweepReport

    sweep = tmp_path / "s"
    make_sweep(sweep)
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    SweepReport(enabled=False).on_multirun_end(cfg)
    # the jobs' states are always counted (fabricated before this "launch": skipped)
    assert capsys.readouterr().out == "sweep: 3 skipped, 1 unfinished\n"
    assert not (sweep / "report").exists()
    SweepReport(figures=False).on_multirun_end(cfg)
    out = capsys.readouterr().out
    assert (sweep / "report" / "summary.md").is_file()
    assert not list((sweep / "report").glob("*.png"))
    assert out.rstrip().splitlines()[-1].startswith("not in the table: 1 job(s)")
    # a report that cannot be written says so in one line and leaves the sweep's exit alone
    bad = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}})
    SweepReport().on_multirun_end(bad)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("report: could not be written")


def test_damaged_job_files_are_named_marked_and_fail_the_command(tmp_path):
    """Four kinds of damage, each one warning line naming the file, the job ``damaged`` in
    final.csv and out of the table; the intact job is still reported; exit 1 unless
    --lenient."""
    sweep = tmp_path / "sweep"
    jobs = {**JOBS, 4: {**JOBS[0], "seed": 2}, 5: {**JOBS[1], "seed": 2}}
    make_sweep(sweep, jobs)
    (sweep / "0" / "metrics.json").write_text('{"epochs": 6, "final": {')  # cut off
    (sweep / "1" / "metrics.json").write_text("[1, 2, 3]\n")
    (sweep / "2" / "history.csv").write_bytes(bytes(range(256)) * 4)
    hist = sweep / "4" / "history.csv"
    lines = hist.read_text().splitlines(keepends=True)
    hist.write_text("".join(line for line in lines if not line.startswith(("5,", "6,"))))
    rc, out, err = run_main([str(sweep), "--no-figures"])
    assert rc == 1
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {sweep / '0' / 'metrics.json'}: not JSON (Expecting property name enclosed "
        "in double quotes at line 1)",
        f"warning: {sweep / '1' / 'metrics.json'}: a JSON list, not an object",
        f"warning: {sweep / '2' / 'history.csv'}: not text (binary bytes)",
        f"warning: {sweep / '4' / 'history.csv'}: ends at epoch 4 but metrics.json counts 6 "
        "epochs (truncated)"]
    assert err.strip().startswith("error: 4 job(s) damaged") and "--lenient" in err
    assert sorted(table_rows(out)) == ["5"]  # the intact finished job only
    assert "6 job(s): 1 finished, 4 damaged, 1 unfinished" in out
    final = pd.read_csv(sweep / "report" / "final.csv")
    assert dict(zip(final["job"].astype(str), final["status"], strict=True)) == {
        "0": "damaged", "1": "damaged", "2": "damaged", "3": "unfinished", "4": "damaged",
        "5": "finished"}
    rc, out, err = run_main([str(sweep), "--no-figures", "--lenient"])
    assert rc == 0 and out.count("warning: ") == 4 and not err


@pytest.mark.slow
def test_make_report_takes_a_folder_with_a_space(tmp_path):
    """The Makefile quotes SWEEP: the error names the folder given, not a piece of it."""
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "a sweep"
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(["make", "-s", "report", f"SWEEP={folder}", f"PY={sys.executable}"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert str(folder) in res.stderr and res.stderr.count("error:") == 1, res.stderr


def test_a_damaged_config_and_an_unwritable_report_folder_are_one_line(tmp_path):
    """A job whose config_resolved.yaml is no YAML is a damaged job (a warning naming the
    file, exit 1), not a traceback; a report folder that cannot be made is one line naming
    it (exit 2)."""
    sweep = tmp_path / "sweep"
    make_sweep(sweep, JOBS)
    (sweep / "0" / "config_resolved.yaml").write_text(": : [bad\n")
    rc, out, err = run_main([str(sweep), "--no-figures"])
    assert rc == 1 and err.strip().startswith("error: 1 job(s) damaged")
    assert [x for x in out.splitlines() if x.startswith("warning: ")] == [
        f"warning: {sweep / '0' / 'config_resolved.yaml'}: not YAML (ParserError: while "
        "parsing a block mapping)"]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, _, err = run_main([str(sweep), "--no-figures", "--out", str(blocker / "report")])
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {blocker / 'report'}: Not a directory; choose another "
                          "report folder with --out")


def test_a_studys_folder_is_not_taken_for_a_sweep(tmp_path):
    """A scores job's folder (its config has a ``scores`` node): one line, exit 2, no training
    table written into it."""
    folder = tmp_path / "scores_job"
    folder.mkdir()
    (folder / "config_resolved.yaml").write_text("seed: 0\nscores:\n  models: 2\n")
    rc, _, err = run_main([str(folder), "--no-figures"])
    assert rc == 2 and err.startswith(f"error: {folder} holds a job of python -m "
                                      "memorization.scores, not a training run")
    assert not (folder / "report").exists()
