"""Launchers for -m sweeps (memorization/base/launch.py, conf/hydra/launcher/, docs/launchers.md):
the threads each job gets, the launcher/trainer pairs that cannot work, and real sweeps through
joblib, Ray and submitit's local executor."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from memorization.base import launch
from memorization.base.errors import ConfigError
from tests.conftest import CONF, FAST, compose_config, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema")

has_joblib = importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
has_submitit = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_joblib = pytest.mark.skipif(not has_joblib, reason="launchers extra not installed")
needs_submitit = pytest.mark.skipif(not has_submitit, reason="launchers extra not installed")
NO_REPORT = "hydra.callbacks.report.enabled=false"


def sweep_cfg(*overrides: str, multirun: bool = True):
    """The config of one job of a `-m` sweep with these overrides (hydra.mode as in a job)."""
    cfg = compose_config(list(overrides))
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    return cfg


@pytest.fixture(scope="module")
def ray_ok():
    """Skip unless Ray and its Hydra plugin are installed and a local Ray instance starts."""
    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    probe = "import ray; ray.init(num_cpus=1, include_dashboard=False); ray.shutdown()"
    try:
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=90)
    except subprocess.TimeoutExpired:
        pytest.skip("ray.init did not start a local instance within 90 s")
    if res.returncode != 0:
        pytest.skip(f"ray.init failed here: {res.stderr.strip().splitlines()[-1:]}")


# ---- threads per job ---------------------------------------------------------------------

@needs_joblib
@pytest.mark.parametrize(("n_jobs", "cores", "threads"),
                         [(2, 2, 1), (2, 16, 8), (3, 16, 5), (-1, 16, 1), (-2, 16, 1),
                          (-9, 16, 2), (32, 16, 1)])
def test_joblib_jobs_share_the_cores(n_jobs, cores, threads):
    cfg = sweep_cfg("hydra/launcher=parallel", f"hydra.launcher.n_jobs={n_jobs}")
    assert launch.launcher_kind(cfg.hydra) == "joblib"
    assert launch.job_threads(cfg.hydra, cores=cores) == threads


def test_ray_jobs_use_the_cpus_they_ask_for():
    cfg = sweep_cfg("hydra/launcher=ray")
    assert launch.launcher_kind(cfg.hydra) == "ray"
    assert launch.job_threads(cfg.hydra, cores=16) == 1  # ray.yaml: num_cpus 1
    cfg = sweep_cfg("hydra/launcher=ray", "hydra.launcher.ray.remote.num_cpus=4",
                    "trainer=ddp_cpu", "trainer.strategy=ddp_spawn")
    assert launch.job_threads(cfg.hydra, cores=16) == 4
    assert launch.job_threads(cfg.hydra, trainer_cfg=cfg.trainer) == 2  # 2 ranks share 4 CPUs


@needs_submitit
def test_slurm_jobs_use_cpus_per_task():
    cfg = sweep_cfg("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=6")
    assert launch.launcher_kind(cfg.hydra) == "slurm"
    assert launch.job_threads(cfg.hydra, cores=64) == 6
    local = sweep_cfg("hydra/launcher=submitit_local")  # no cpus_per_task: torch's default
    assert launch.launcher_kind(local.hydra) == "submitit_local"
    assert launch.job_threads(local.hydra) is None


def test_basic_launcher_single_runs_and_explicit_threads():
    assert launch.job_threads(sweep_cfg().hydra) is None  # basic launcher: torch's default
    if has_joblib:  # a single run never uses the launcher it names
        single = sweep_cfg("hydra/launcher=parallel", multirun=False)
        assert launch.job_threads(single.hydra, cores=16) is None
        assert launch.job_threads(single.hydra, 3) == 3
    assert launch.job_threads({"mode": "MULTIRUN"}, 2) == 2  # an explicit count wins
    plain = {"mode": "MULTIRUN", "launcher": {"_target_": "x.JoblibLauncher", "n_jobs": 4}}
    assert launch.job_threads(plain, cores=8) == 2  # plain dicts work too
    plain["launcher"]["n_jobs"] = None  # joblib's None: all cores
    assert launch.job_threads(plain, cores=8) == 1
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="threads="):
            launch.job_threads({}, bad)


def test_apply_threads_sets_torch_and_child_env():
    """In a fresh process (the thread pools are per process): twice, as in a reused worker."""
    code = textwrap.dedent("""
        import os, torch
        from memorization.base.launch import apply_threads
        torch.ones(4) @ torch.ones(4)
        apply_threads(1); apply_threads(1); apply_threads(None)
        print(torch.get_num_threads(), torch.get_num_interop_threads(),
              os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"])
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["1", "1", "1", "1"]


# ---- launcher/trainer pairs that cannot work ------------------------------------------------

@needs_joblib
def test_parallel_on_a_gpu_machine_needs_a_gpu_per_worker():
    """hydra/launcher=parallel gives each worker its own GPU (launch.take_gpu): more workers
    than GPUs is refused in one line; as many, or CPU jobs, or a single run, pass."""
    cfg = sweep_cfg("hydra/launcher=parallel", "hydra.launcher.n_jobs=3")
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs=2") as err:
        launch.check_launcher(cfg.hydra, cfg.trainer, cuda=True, gpus=["0", "1"])
    assert "\n" not in str(err.value)
    launch.check_launcher(cfg.hydra, cfg.trainer, cuda=True, gpus=["0", "1", "2"])
    launch.check_launcher(cfg.hydra, cfg.trainer, cuda=False, gpus=[])  # no GPU: CPU jobs
    cpu = sweep_cfg("hydra/launcher=parallel", "hydra.launcher.n_jobs=3", "trainer=cpu")
    launch.check_launcher(cpu.hydra, cpu.trainer, cuda=True, gpus=["0"])
    single = sweep_cfg("hydra/launcher=parallel", "hydra.launcher.n_jobs=3", multirun=False)
    launch.check_launcher(single.hydra, single.trainer, cuda=True, gpus=["0"])


_TAKE = textwrap.dedent("""
    import json, os, sys, time
    from omegaconf import OmegaConf
    from memorization.base import launch
    hydra = OmegaConf.create({"mode": "MULTIRUN", "launcher": {
        "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "n_jobs": 2}})
    trainer = OmegaConf.create({"accelerator": sys.argv[2]})
    try:
        first = launch.take_gpu(hydra, trainer, lock_dir=__import__("pathlib").Path(sys.argv[1]))
        again = launch.take_gpu(hydra, trainer)
        print(json.dumps([first, again, os.environ.get("CUDA_VISIBLE_DEVICES")]), flush=True)
    except Exception as exc:
        print(json.dumps(["error", str(exc)]), flush=True)
    time.sleep(float(sys.argv[3]))
""")


def test_each_parallel_worker_takes_its_own_gpu(tmp_path):
    """Workers of one launcher that live at once get different GPUs of $MEMORIZATION_GPUS,
    keep theirs for later jobs, and one worker too many gets a one-line error; a slot frees
    when its worker dies; a CPU job takes none."""
    env = {**os.environ, launch.GPUS: "3,5"}
    env.pop("CUDA_VISIBLE_DEVICES", None)

    def start(accelerator="auto", hold=3.0):
        return subprocess.Popen([sys.executable, "-c", _TAKE, str(tmp_path), accelerator,
                                 str(hold)], stdout=subprocess.PIPE, text=True, env=env)

    def answer(proc):
        return json.loads(proc.stdout.readline())

    a, b = start(), start(hold=60)
    got = [answer(a), answer(b)]
    c = start(hold=0)
    assert sorted(g[0] for g in got) == ["3", "5"]
    assert all(g[0] == g[1] == g[2] for g in got)  # the same GPU again, and as CUDA sees it
    late = answer(c)
    assert late[0] == "error" and "n_jobs to at most 2" in late[1] and "\n" not in late[1]
    cpu = start("cpu", hold=0)
    assert answer(cpu) == [None, None, None]
    a.wait(timeout=30)
    d = start(hold=0)  # a's slot is free again
    assert answer(d)[0] == got[0][0]
    b.kill()
    for p in (b, c, cpu, d):
        p.wait(timeout=30)


@pytest.mark.parametrize("launcher", ["basic", "parallel"])
@pytest.mark.parametrize("trainer", [["trainer=ddp"], ["trainer=ddp_cpu"],
                                     ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"],
                                     ["trainer.devices=2"]])
def test_ddp_refused_in_basic_and_joblib_sweeps(launcher, trainer):
    if launcher == "parallel" and not has_joblib:
        pytest.skip("launchers extra not installed")
    extra = [] if launcher == "basic" else [f"hydra/launcher={launcher}"]
    cfg = sweep_cfg(*extra, *trainer)
    with pytest.raises(ConfigError, match="basic launcher or hydra/launcher=parallel"):
        launch.check_launcher(cfg.hydra, cfg.trainer, cuda=False)
    single = sweep_cfg(*extra, *trainer, multirun=False)
    launch.check_launcher(single.hydra, single.trainer, cuda=False)  # one run: Lightning's own


def test_ddp_in_ray_needs_spawn_and_enough_gpus():
    cfg = sweep_cfg("hydra/launcher=ray", "trainer=ddp_cpu")
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_spawn"):
        launch.check_launcher(cfg.hydra, cfg.trainer, cuda=False)
    cfg = sweep_cfg("hydra/launcher=ray", "trainer=ddp_cpu", "trainer.strategy=ddp_spawn")
    launch.check_launcher(cfg.hydra, cfg.trainer, cuda=False)
    gpu = sweep_cfg("hydra/launcher=ray", "trainer=ddp", "trainer.strategy=ddp_spawn",
                    "hydra.launcher.ray.remote.num_gpus=1")
    with pytest.raises(ConfigError, match=r"hydra.launcher.ray.remote.num_gpus=2"):
        launch.check_launcher(gpu.hydra, gpu.trainer, cuda=True)
    two = sweep_cfg("hydra/launcher=ray", "trainer=ddp", "trainer.strategy=ddp_spawn",
                    "hydra.launcher.ray.remote.num_gpus=2")
    launch.check_launcher(two.hydra, two.trainer, cuda=True)


# ---- config files ----------------------------------------------------------------------------

def test_ray_config_is_complete(monkeypatch):
    """ray.yaml stands alone (the plugin's own `ray` config is not its default), starts a local
    instance or joins a cluster, and asks for one GPU per job on a GPU machine only."""
    text = (CONF / "hydra" / "launcher" / "ray.yaml").read_text()
    assert "defaults" not in text
    cfg = compose_config(["hydra/launcher=ray", "hydra.launcher.ray.init.address=auto"])
    ray_cfg = cfg.hydra.launcher.ray
    assert cfg.hydra.launcher._target_.endswith("ray_launcher.RayLauncher")
    assert ray_cfg.init.address == "auto"
    assert ray_cfg.init.object_store_memory is None  # the plugin's 75 MB breaks joining
    assert ray_cfg.remote.num_cpus == 1
    monkeypatch.setattr(launch, "cuda_available", lambda: False)
    assert OmegaConf.to_container(ray_cfg.remote, resolve=True)["num_gpus"] == 0
    monkeypatch.setattr(launch, "cuda_available", lambda: True)
    assert OmegaConf.to_container(ray_cfg.remote, resolve=True)["num_gpus"] == 1


@needs_submitit
def test_slurm_config_composes_with_ddp():
    cfg = sweep_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=2",
                    "hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=2")
    lc = cfg.hydra.launcher
    assert lc._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (lc.tasks_per_node, lc.gpus_per_node, lc.nodes) == (2, 2, 1)
    assert lc.array_parallelism == 256 and lc.cpus_per_task == 4
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", 2)
    launch.check_launcher(cfg.hydra, cfg.trainer, cuda=False)
    assert launch.job_threads(cfg.hydra, trainer_cfg=cfg.trainer) == 4  # per rank: its task's
    one_task = sweep_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=2")
    with pytest.raises(ConfigError, match="hydra.launcher.tasks_per_node=2"):
        launch.check_launcher(one_task.hydra, one_task.trainer, cuda=False)


def test_missing_plugin_names_the_extra(monkeypatch):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if "ray" in name
                        else real(name, *a))
    err = launch.missing_plugin(["-m", "hydra/launcher=ray", "noise.p=0,0.2"])
    assert err and "pip install -e '.[ray]'" in err
    assert launch.missing_plugin(["hydra/launcher=basic", "noise.p=0"]) is None


# ---- real sweeps ----------------------------------------------------------------------------

TINY_APP = '''
import json, os
import hydra, torch
from hydra.core.hydra_config import HydraConfig
from memorization.base.launch import apply_threads, job_threads
from memorization.base.process import setup_process

setup_process()  # as every entry point: ray.yaml's ${mem.gpus_if_cuda} resolver

@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    hc = HydraConfig.get()
    apply_threads(job_threads(hc))
    out = {"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
           "omp": os.environ.get("OMP_NUM_THREADS")}
    with open(os.path.join(hc.runtime.output_dir, "threads.json"), "w") as f:
        json.dump(out, f)

if __name__ == "__main__":
    main()
'''


def _tiny_sweep(tmp_path: Path, *overrides: str) -> list[dict]:
    """A 2-job sweep of a task that applies its launcher's thread budget and reports it."""
    (tmp_path / "app.py").write_text(TINY_APP)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "app.py", "-m", *overrides, "+x=1,2",
                          f"hydra.searchpath=[file://{CONF}]", f"hydra.sweep.dir={sweep}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads((sweep / job / "threads.json").read_text()) for job in ("0", "1")]


@needs_joblib
@pytest.mark.slow
def test_joblib_workers_apply_their_thread_budget(tmp_path):
    """OMP_NUM_THREADS=2 outside; 2 jobs at once on this machine's cores: each gets
    cores // 2 threads, torch's intra- and inter-op pools and its children's OpenMP alike."""
    n = max(1, launch.available_cores() // 2)
    for job in _tiny_sweep(tmp_path, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2"):
        assert job == {"threads": n, "interop": n, "omp": str(n)}


@pytest.mark.slow
def test_ray_workers_apply_their_thread_budget(tmp_path, ray_ok):
    for job in _tiny_sweep(tmp_path, "hydra/launcher=ray",
                           "hydra.launcher.ray.remote.num_cpus=1"):
        assert job == {"threads": 1, "interop": 1, "omp": "1"}


def _ray_cli(args: list[str], cwd: Path, env: dict | None = None):
    res = run_cli(["-m", "hydra/launcher=ray", *args], cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _metrics(sweep: Path, jobs=("0", "1")) -> list[dict]:
    return [json.loads((sweep / job / "metrics.json").read_text()) for job in jobs]


@needs_joblib
@pytest.mark.slow
def test_parallel_sweep_jobs_use_one_thread_each(tmp_path):
    """The real entry point under joblib, 2 jobs at once on 2 cores: 1 torch thread each."""
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *FAST,
                   "trainer.max_epochs=1", "noise.p=0,0.4", NO_REPORT,
                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env={"OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = _metrics(sweep)
    expected = max(1, launch.available_cores() // 2)
    assert [m["threads"] for m in metrics] == [expected, expected]


@needs_joblib
@pytest.mark.slow
def test_parallel_sweep_gives_each_worker_its_own_gpu(tmp_path):
    """The real entry point under joblib with two GPU ids to share out ($MEMORIZATION_GPUS;
    this machine has no GPU, so the jobs still train on the CPU): each job records the GPU
    its worker took, and two workers never hold the same one."""
    sweep = tmp_path / "sweep"
    fast = [a for a in FAST if a != "trainer.accelerator=cpu"]  # auto: a GPU job if it could
    res = run_cli(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *fast,
                   "trainer.max_epochs=1", "noise.p=0,0.2,0.4", NO_REPORT,
                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                  env={"OMP_NUM_THREADS": "2", launch.GPUS: "3,5"})
    assert res.returncode == 0, res.stderr[-3000:]
    gpus = [m["cuda_visible_devices"] for m in _metrics(sweep, jobs=("0", "1", "2"))]
    assert set(gpus) <= {"3", "5"} and None not in gpus
    by_pid: dict[str, set[str]] = {}
    for job in ("0", "1", "2"):
        log = (sweep / job / "run.log").read_text()
        line = next(ln for ln in log.splitlines() if "(worker slot" in ln)
        gpu, pid = line.split("GPU ")[1].split()[0], line.rsplit("pid ", 1)[1].rstrip(")")
        by_pid.setdefault(pid, set()).add(gpu)
    assert all(len(g) == 1 for g in by_pid.values())  # a worker keeps its GPU
    owners = [next(iter(g)) for g in by_pid.values()]
    assert len(owners) == len(set(owners))  # two workers never share one


@pytest.mark.slow
def test_ray_sweep_on_digits(tmp_path, ray_ok):
    """2 jobs on a local Ray instance started for the sweep, 1 CPU each."""
    sweep = tmp_path / "sweep"
    start = time.monotonic()
    _ray_cli(["hydra.launcher.ray.remote.num_cpus=1", "noise.p=0,0.4", "data=digits",
              "trainer.max_epochs=1", "logger=none", "trainer.accelerator=cpu",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              NO_REPORT, f"hydra.sweep.dir={sweep}"], tmp_path, env={"OMP_NUM_THREADS": "2"})
    print(f"ray sweep: {time.monotonic() - start:.1f} s")
    metrics = _metrics(sweep)
    assert [m["corruption"]["p"] for m in metrics] == [0.0, 0.4]
    assert all(m.get("threads", 1) == 1 for m in metrics)


@pytest.mark.slow
def test_ddp_spawn_runs_inside_a_ray_job(tmp_path, ray_ok):
    """A Ray job is its own process group: 2 CPU ranks started by spawning."""
    sweep = tmp_path / "sweep"
    res = _ray_cli(["hydra.launcher.ray.remote.num_cpus=2", "trainer=ddp_cpu",
                    "trainer.strategy=ddp_spawn", *FAST, "noise.p=0", "trainer.max_epochs=1",
                    NO_REPORT, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert "MEMBER: 2/2" in res.stdout + res.stderr
    assert _metrics(sweep, ("0",))[0]["epochs"] == 1


@needs_submitit
@pytest.mark.slow
def test_submitit_local_job_mirrors_slurm(tmp_path):
    """slurm.yaml's settings on submitit's local executor: 1 task, 1 CPU, no GPU."""
    slurm = compose_config(["hydra/launcher=slurm"]).hydra.launcher
    mirrored = [f"hydra.launcher.{k}={slurm[k]}" for k in ("timeout_min", "mem_gb", "nodes")]
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "hydra/launcher=submitit_local", *mirrored,
                   "hydra.launcher.tasks_per_node=1", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.gpus_per_node=0", *FAST, "trainer.max_epochs=1",
                   "noise.p=0.2", NO_REPORT, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = _metrics(sweep, ("0",))[0]
    assert metrics["corruption"]["p"] == 0.2 and metrics.get("threads", 1) == 1
    assert any((sweep / ".submitit").iterdir())
