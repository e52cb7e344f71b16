"""What a job needs from the Hydra launcher that runs it: its torch threads, and the launcher and
trainer combinations that cannot work (one-line errors). Called inside each job, so it holds for
every launcher: basic, joblib (``hydra/launcher=parallel``), Ray, submitit (SLURM or local).
Pure functions of the config nodes (DictConfig or plain dicts); docs/launchers.md has the why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from memorization.base.errors import ConfigError

# set by the entry point (memorization/cli/entry.py) for the workers its launcher starts
LAUNCHER_PID = "MEMORIZATION_LAUNCHER_PID"
LAUNCHER_HOST = "MEMORIZATION_LAUNCHER_HOST"
# the GPUs a parallel (joblib) sweep shares out, one per worker; default: those CUDA sees
GPUS = "MEMORIZATION_GPUS"
_gpu_slot: tuple[int, str, Any] | None = None  # this worker's (slot, GPU id, held lock file)

_KINDS = {"BasicLauncher": "basic", "JoblibLauncher": "joblib", "RayLauncher": "ray",
          "SlurmLauncher": "slurm", "LocalLauncher": "submitit_local"}
# the `hydra/launcher=` options, the plugin each needs, and the extra that installs it
_PLUGINS = {"parallel": ("hydra_joblib_launcher", "launchers"),
            "joblib": ("hydra_joblib_launcher", "launchers"),
            "slurm": ("hydra_submitit_launcher", "launchers"),
            "submitit_slurm": ("hydra_submitit_launcher", "launchers"),
            "submitit_local": ("hydra_submitit_launcher", "launchers"),
            "ray": ("hydra_ray_launcher", "ray")}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _get(node: Any, path: str, default: Any = None) -> Any:
    """``node.a.b`` for a DictConfig or nested dicts; ``default`` when a key is absent/None."""
    if OmegaConf.is_config(node):
        value = OmegaConf.select(node, path, default=None, throw_on_missing=False)
        return default if value is None else value
    for key in path.split("."):
        if not isinstance(node, dict) or node.get(key) is None:
            return default
        node = node[key]
    return node


def launcher_kind(hydra_cfg: Any) -> str:
    """basic, joblib, ray, slurm, submitit_local, or other: from ``hydra.launcher._target_``."""
    target = str(_get(hydra_cfg, "launcher._target_", "BasicLauncher"))
    return _KINDS.get(target.rsplit(".", 1)[-1], "other")


def _multirun(hydra_cfg: Any) -> bool:
    """A launcher runs only -m sweeps; a single run ignores it whatever hydra/launcher says."""
    return str(_get(hydra_cfg, "mode", "")).rsplit(".", 1)[-1].upper() == "MULTIRUN"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask: what joblib and SLURM restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _strategy(trainer_cfg: Any) -> str:
    strategy = _get(trainer_cfg, "strategy", "auto")
    if not isinstance(strategy, str):  # a {_target_: ...DDPStrategy, start_method: ...} node
        return f"{_get(strategy, '_target_', '')} {_get(strategy, 'start_method', '')}".lower()
    return strategy.lower()


def local_processes(trainer_cfg: Any) -> int:
    """Processes Lightning runs per node for this trainer config: its devices under a DDP-like
    strategy or devices > 1 (devices "auto" or -1 under DDP: at least 2), else 1."""
    devices = _get(trainer_cfg, "devices", 1)
    if isinstance(devices, str):
        devices = int(devices) if devices.strip().isdigit() else \
            len(devices.strip(",").split(",")) if "," in devices else -1
    count = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) \
        else int(devices)
    multi = any(s in _strategy(trainer_cfg) for s in ("ddp", "fsdp", "deepspeed"))
    return count if count > 0 else 2 if multi else 1


def joblib_workers(hydra_cfg: Any, cores: int | None = None) -> int:
    """Worker processes of hydra/launcher=parallel (joblib: n_jobs -1 all cores, -2 all but
    one, ...)."""
    n_jobs = int(_get(hydra_cfg, "launcher.n_jobs", -1))
    return max(1, n_jobs if n_jobs > 0 else (cores or available_cores()) + 1 + n_jobs)


def sweep_gpus() -> list[str]:
    """The GPU ids a parallel sweep shares out: ``$MEMORIZATION_GPUS`` (comma-separated) when
    set, else those this process sees (``$CUDA_VISIBLE_DEVICES``'s, or 0..n-1). Counted through
    NVML, which does not start CUDA, so a worker can still choose its GPU afterwards."""
    listed = os.environ.get(GPUS)
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(n)]
    return [g.strip() for g in visible.split(",") if g.strip()][:n]


def _gpu_jobs(hydra_cfg: Any, trainer_cfg: Any) -> bool:
    """A parallel sweep's job that may use a GPU (accelerator not cpu)."""
    accelerator = str(_get(trainer_cfg, "accelerator", "auto")).lower()
    return _multirun(hydra_cfg) and launcher_kind(hydra_cfg) == "joblib" and \
        accelerator not in ("cpu", "mps")


def _log_gpu(slot: int, gpu: str) -> None:
    """Into the job's run.log: which GPU this job's worker holds."""
    logging.getLogger(__name__).info("GPU %s (worker slot %d, pid %d)", gpu, slot, os.getpid())


def take_gpu(hydra_cfg: Any, trainer_cfg: Any, lock_dir: Path | None = None) -> str | None:
    """Give this parallel-sweep worker a GPU of its own, before anything in it starts CUDA:
    the first of :func:`sweep_gpus` whose slot no other live worker of the same launcher holds
    (a lock file per slot, held for the worker's life and freed by the OS when it dies), set as
    ``CUDA_VISIBLE_DEVICES``. A reused worker keeps its GPU. Returns the GPU id; None for
    anything but a GPU job of hydra/launcher=parallel, or a machine without GPUs."""
    global _gpu_slot
    if not _gpu_jobs(hydra_cfg, trainer_cfg):
        return None
    if _gpu_slot is not None:
        _log_gpu(*_gpu_slot[:2])
        return _gpu_slot[1]
    gpus = sweep_gpus()
    if not gpus:
        return None
    import fcntl
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA started in this worker before its GPU was chosen; "
                           "launch.take_gpu must run first in the job")
    folder = lock_dir or Path(tempfile.gettempdir()) / \
        f"memorization-gpus-{os.environ.get(LAUNCHER_PID) or os.getppid()}"
    folder.mkdir(parents=True, exist_ok=True)
    for k, gpu in enumerate(gpus):
        handle = open(folder / f"slot{k}.lock", "a")  # noqa: SIM115 (held for the process's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _gpu_slot = (k, gpu, handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        _log_gpu(k, gpu)
        return gpu
    raise ConfigError(f"every one of the {len(gpus)} GPUs ({','.join(gpus)}) is held by another "
                      "worker of this sweep; set hydra.launcher.n_jobs to at most "
                      f"{len(gpus)}")


def job_threads(hydra_cfg: Any, explicit: int | None = None, *, trainer_cfg: Any = None,
                cores: int | None = None) -> int | None:
    """Torch threads for one job (per rank) under the launcher running it; None keeps torch's
    default (a single run, the basic launcher, submitit without cpus_per_task).

    ``explicit`` (a top-level ``threads`` key, say) wins. joblib: the machine's cores shared by
    its n_jobs workers (n_jobs -1 or null: all cores busy, so 1 each); Ray: the CPUs the job
    asked for (``ray.remote.num_cpus``, Ray's default 1); SLURM: ``cpus_per_task`` (each rank is
    a task). With ``trainer_cfg``, a Ray or joblib job running DDP splits its share over ranks."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int) or explicit < 1:
            raise ConfigError(f"threads={explicit} must be an integer >= 1 or null")
        return explicit
    if not _multirun(hydra_cfg):
        return None
    kind, cores = launcher_kind(hydra_cfg), cores or available_cores()
    if kind == "joblib":
        share = cores // min(cores, joblib_workers(hydra_cfg, cores))
    elif kind == "ray":
        share = int(float(_get(hydra_cfg, "launcher.ray.remote.num_cpus", 1)))
    elif kind in ("slurm", "submitit_local"):
        cpus = _get(hydra_cfg, "launcher.cpus_per_task")
        return None if cpus is None else max(1, int(cpus))
    else:
        return None
    ranks = local_processes(trainer_cfg) if trainer_cfg is not None else 1
    return max(1, share // ranks)


def apply_threads(n: int | None) -> None:
    """Use ``n`` threads in torch and in the OpenMP/MKL pools of this process and its children
    (DDP ranks, data workers); None changes nothing."""
    if n is None:
        return
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    # allowed once per process, before any inter-op work (a reused worker has done some)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)


def check_launcher(hydra_cfg: Any, trainer_cfg: Any, *, cuda: bool | None = None,
                   gpus: list[str] | None = None) -> None:
    """Raise a one-line ConfigError for a sweep whose launcher cannot run this trainer config;
    a single run (no -m) passes, whatever hydra/launcher says."""
    if not _multirun(hydra_cfg):
        return
    kind = launcher_kind(hydra_cfg)
    accelerator = str(_get(trainer_cfg, "accelerator", "auto")).lower()
    if _gpu_jobs(hydra_cfg, trainer_cfg):
        gpus = sweep_gpus() if gpus is None else gpus
        workers = joblib_workers(hydra_cfg)
        if gpus and workers > len(gpus):
            raise ConfigError(f"hydra/launcher=parallel gives each of its {workers} workers a "
                              f"GPU of its own, but {len(gpus)} are visible; set "
                              f"hydra.launcher.n_jobs={len(gpus)} (or trainer=cpu)")
    cuda = cuda_available() if cuda is None else cuda
    ranks = local_processes(trainer_cfg)
    if ranks == 1 and int(_get(trainer_cfg, "num_nodes", 1)) == 1:
        return
    spawned = any(s in _strategy(trainer_cfg) for s in ("spawn", "fork", "notebook"))
    if kind in ("basic", "joblib"):
        raise ConfigError("trainer=ddp cannot run inside a -m sweep with the basic launcher or "
                          "hydra/launcher=parallel (Lightning starts each rank by re-running the "
                          "whole command); run the jobs one by one or use hydra/launcher=slurm "
                          "or ray")
    if kind in ("ray", "submitit_local") and not spawned:
        raise ConfigError(f"trainer=ddp in a hydra/launcher={kind} job needs "
                          "trainer.strategy=ddp_spawn (Lightning cannot re-run the command of a "
                          "worker process to start its ranks)")
    gpus = accelerator not in ("cpu", "mps")
    if kind == "ray" and gpus:
        asked = float(_get(hydra_cfg, "launcher.ray.remote.num_gpus", 0))
        if (cuda or asked) and asked < ranks:
            raise ConfigError(f"trainer.devices={ranks} but each Ray job gets {asked:g} GPUs; "
                              f"set hydra.launcher.ray.remote.num_gpus={ranks}")
    if kind == "slurm":
        tasks = int(_get(hydra_cfg, "launcher.tasks_per_node", 1))
        per_node = _get(hydra_cfg, "launcher.gpus_per_node")
        if tasks != ranks or (gpus and per_node and int(per_node) < ranks):
            raise ConfigError(f"trainer.devices={ranks} needs one SLURM task per device: set "
                              f"hydra.launcher.tasks_per_node={ranks} and "
                              f"hydra.launcher.gpus_per_node={ranks}")


def missing_plugin(args: list[str]) -> str | None:
    """A one-line error when a ``hydra/launcher=X`` override names a launcher whose Hydra plugin
    is not installed (Hydra's own message does not say which extra to install)."""
    from importlib.util import find_spec

    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") != "hydra/launcher" or value not in _PLUGINS:
            continue
        module, extra = _PLUGINS[value]
        if find_spec(f"hydra_plugins.{module}") is None:
            return (f"hydra/launcher={value} needs the Hydra plugin {module.replace('_', '-')}; "
                    f"install the '{extra}' extra: pip install -e '.[{extra}]'")
    return None


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what platform knows."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_WATCHED: list[int] = []  # the launcher this worker process watches, once it does


def die_with_launcher(poll_s: float = 0.5) -> None:
    """In a worker process that a sweep's launcher on this machine started (joblib's loky
    workers, a local submitit or Ray worker), end this process when the launcher dies, however
    it dies (kill -9 included): an orphaned worker would train on and write into folders that
    a rerun of the sweep then races. A daemon thread polls the launcher's PID (from the entry
    point's environment) and its own parent; nothing in the job's process or the launcher's
    changes otherwise. In the launcher's own process, or on another host, it does nothing."""
    import signal
    import socket
    import threading

    pid = int(os.environ.get(LAUNCHER_PID) or 0)
    if (not pid or pid == os.getpid() or _WATCHED
            or os.environ.get(LAUNCHER_HOST) != socket.gethostname()):
        return
    parent = os.getppid()
    _WATCHED.append(pid)

    def alive() -> bool:
        if parent == pid:  # started by the launcher itself: its own parent tells best
            return os.getppid() == parent
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        import time

        while alive():
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)  # its file locks go with it (the kernel's)

    threading.Thread(target=watch, name="die-with-launcher", daemon=True).start()
