"""What every Hydra entry point (``memorization.run`` and the studies ``memorization.sensitivity``
and ``memorization.easy_hard``) does before Hydra starts: find conf/, check the command line so
that bad input fails in one line with nothing written, pin the output folder and take its lock
(memorization/base/folder_lock.py), and give the process a W&B service of its own.

Also what every job does inside Hydra (:func:`job_held`, :func:`error_line`). Layer:
orchestration; it imports the schemas, help, launch and folder_lock, never an entry point.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf

import memorization.jobs.catalog  # noqa: F401  (the groups' schemas, in Hydra's ConfigStore)
from memorization.base.errors import ConfigError, first_line, root_error
from memorization.base.io import conf_dir


def config_dirs(args: list[str]) -> list[Path] | None:
    """Where Hydra looks for configs with these arguments: conf/, then the folders added by
    ``--config-dir``/``-cd`` and ``hydra.searchpath=[...]`` (file:// or pkg:// entries); None
    with ``--config-path``/``-cp``, which replaces conf/ (no check then: Hydra's own)."""
    if {"--config-path", "-cp"} & {a.partition("=")[0] for a in args}:
        return None
    dirs = [Path(conf_dir())]
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            dirs.append(Path(value).expanduser().resolve())
        elif flag.lstrip("+") == "hydra.searchpath" and eq:
            dirs += [d for e in value.strip("[]").split(",") if (d := _search_dir(e))]
    return dirs


def extra_dirs(args: list[str]) -> list[str]:
    return [str(d) for d in (config_dirs(args) or [])[1:]]


def _search_dir(entry: str) -> Path | None:
    """The folder of one hydra.searchpath entry: file://DIR, pkg://package (or a bare DIR)."""
    import importlib.util

    entry = entry.strip().strip("'\"")
    scheme, sep, rest = entry.partition("://")
    if not sep:
        scheme, rest = "file", entry
    if scheme == "file" and rest:
        return Path(rest).expanduser().resolve()
    if scheme == "pkg":
        try:
            spec = importlib.util.find_spec(rest.replace("/", "."))
        except (ImportError, ValueError):
            return None
        places = list(spec.submodule_search_locations or []) if spec else []
        return Path(places[0]) if places else None
    return None


def unknown_option(args: list[str]) -> str | None:
    """The first ``group=option`` override naming an option that no config folder of the run
    has (conf/, and those --config-dir and hydra.searchpath add), as a one-line error (Hydra's
    own message spans a dozen lines)."""
    dirs = config_dirs(args)
    if dirs is None:
        return None
    from hydra.core.config_store import ConfigStore

    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or arg.startswith("-") or "." in key or key.startswith("hydra"):
            continue
        groups = [d / key for d in dirs if (d / key).is_dir()]
        if not groups or "(" in value:  # sweep functions such as range(...) pass
            continue
        stored = ConfigStore.instance().repo.get(key, {})  # options registered in Python
        known = sorted({p.stem for g in groups for p in g.glob("*.yaml")}
                       | {n.removesuffix(".yaml") for n, v in stored.items()
                          if not isinstance(v, dict)})
        for option in value.strip("[]").split(","):
            option = option.strip()
            if option and option != "null" and option not in known:
                return (f"{key}={option} is not an option of '{key}'; choose one of: "
                        f"{', '.join(known)}")
    return None


def is_sweep(args: list[str]) -> bool:
    return bool({"-m", "--multirun"} & set(args))


# a job writes its config, logs and checkpoints: below this much free space on its disk it
# would fail in Hydra's first writes, with Hydra's traceback
MIN_FREE = 16 * 2**20


def _free_bytes(path: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def precheck(args: list[str], config_name: str = "config",
             validate: Callable[[DictConfig], object] | None = None
             ) -> tuple[str | None, DictConfig | None]:
    """(the one-line error a run with these arguments would give before it starts, the first
    job's config): an unknown option or key, a launcher whose plugin is not installed, a value
    of the wrong type, an output folder that cannot be made, and what ``validate`` refuses in
    the first job (a single run's values: a sweep's jobs are all checked by its launch
    callback, before its folder is made)."""
    from memorization.base.launch import missing_plugin

    err = unknown_option(args) or missing_plugin(args)
    if err or {"--help", "-h", "--hydra-help"} & set(args):
        return err, None
    from memorization.cli.help import compose_first_job

    try:
        cfg = compose_first_job(Path(conf_dir()), args, search=extra_dirs(args),
                                config_name=config_name)
    except Exception as exc:  # a value of the wrong type: one line; else Hydra's own message
        from hydra.errors import OverrideParseException

        err = root_error(exc)
        if isinstance(err, OverrideParseException):  # Hydra's grammar: 4 lines and a link
            from memorization.base.overrides import unparsable

            bad = unparsable(args)
            return (f"Hydra cannot parse the override {bad or first_line(err)}: quote a value "
                    "with spaces or characters outside ASCII, e.g. 'key=\"value\"'"), None
        return (str(err) if isinstance(err, ConfigError) else None), None
    key = "hydra.sweep.dir" if is_sweep(args) else "hydra.run.dir"
    out = output_dir(cfg, args)
    if out is not None:
        place = next((p for p in [out, *out.parents] if p.exists()), None)
        if place is not None and not (place.is_dir() and os.access(place, os.W_OK)):
            return (f"the output folder {out} cannot be made there ({place} is not a writable "
                    f"folder); choose another with {key}=..."), cfg
        free = _free_bytes(place) if place is not None else None
        if free is not None and free < MIN_FREE:  # Hydra's own first writes would fail
            return (f"only {free // 1024} KiB free on the disk of {out}: free space there "
                    f"(at least {MIN_FREE // 2**20} MiB) or choose another folder with "
                    f"{key}=..."), cfg
    if validate is not None and (not is_sweep(args) or {"--cfg", "-c"} & set(args)):
        try:
            validate(cfg)
        except Exception as exc:
            err = root_error(exc)
            if isinstance(err, ConfigError) or {"--cfg", "-c"} & set(args):
                return first_line(err), cfg
            # anything else is the job's to report, with its traceback in FAILED
    return None, cfg


def output_dir(cfg: DictConfig, args: list[str]) -> Path | None:
    """The folder Hydra will write this command's output into: hydra.run.dir, or
    hydra.sweep.dir with -m."""
    key = "hydra.sweep.dir" if is_sweep(args) else "hydra.run.dir"
    try:
        value = OmegaConf.select(cfg, key)
    except Exception:
        return None
    return Path(str(value)) if value is not None else None


def pinned(args: list[str], out: Path) -> list[str]:
    """``args`` with the output folder given as the one just resolved when it was not given
    literally: a folder named after the time (``${now:...}``) is the one this process locked,
    not one a second later."""
    key = "hydra.sweep.dir" if is_sweep(args) else "hydra.run.dir"
    given = [a for a in args if a.partition("=")[0].lstrip("+") == key]
    if given and "${" not in given[-1]:
        return args
    text = str(out)
    quoted = f"'{text}'" if "'" not in text else f'"{text}"'
    return [*(a for a in args if a not in given), f"{key}={quoted}"]


def own_wandb_service() -> None:
    """Forget a W&B service inherited from the process that started this one (wandb exports
    WANDB_SERVICE so that children share a parent's service). A job killed with kill -9 leaves
    its run registered in that shared service, which outlives it, and the rerun that resumes
    the run's id is refused ("run ID ... is in use"); a service of the job's own ends with it."""
    os.environ.pop("WANDB_SERVICE", None)


def other_rank() -> bool:
    """A process of a DDP run other than its rank zero (Lightning starts each by re-running the
    command): rank zero holds the folder for all of them."""
    return any(os.environ.get(v, "0") not in ("", "0")
               for v in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


@contextlib.contextmanager
def started(config_name: str = "config", validate: Callable | None = None,
            rules=None):
    """The entry point's start, before Hydra: bad input refused in one line (exit 2); the
    output folder pinned in ``sys.argv`` (a folder named after the time is the one resolved
    here) and held (memorization/base/folder_lock.py) while the block runs Hydra, after which
    ``check_folder(cfg, folder, rules)`` may refuse what the folder holds (``rules``: the job's
    FolderRules, memorization/jobs/folder.py; by default a run's). A refusal writes nothing: a
    folder made only for the lock is removed again."""
    from memorization.base.folder_lock import hold

    own_wandb_service()
    if not other_rank():  # a DDP rank re-runs the command: its launcher is rank zero's
        import socket

        from memorization.base.launch import LAUNCHER_HOST, LAUNCHER_PID

        os.environ[LAUNCHER_PID] = str(os.getpid())
        os.environ[LAUNCHER_HOST] = socket.gethostname()
    args = sys.argv[1:]
    err, cfg = precheck(args, config_name, validate)
    if err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out = None
    if cfg is not None and not {"--cfg", "-c", "--info", "-i"} & set(args) and not other_rank():
        out = output_dir(cfg, args)
    if out is None:
        yield None
        return
    sys.argv[1:] = pinned(args, out)
    new = not out.exists()
    wait = bool(OmegaConf.select(cfg, "wait_for_lock", default=False))
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_if_empty, out, new)
        try:
            stack.enter_context(hold(out, wait=wait, what="sweep folder" if is_sweep(args)
                                     else "job folder"))
            if not is_sweep(args):
                check_folder(cfg, out, rules)
        except ConfigError as e:  # a refusal, before Hydra wrote anything
            print(f"error: {first_line(e)}", file=sys.stderr)
            stack.close()
            sys.exit(2)
        yield out


def check_folder(cfg: DictConfig, out: Path, rules=None) -> None:
    """A single job's folder that holds a job with other settings (beyond what ``rules`` lets
    change) is refused before Hydra writes into it (its .hydra/ files would no longer describe
    the job there)."""
    from memorization.jobs.folder import RUN, job_state, settings_refusal
    from memorization.jobs.validate import composed_resolved

    if (cfg.get("resume", True) and cfg.get("ckpt_path") is None
            and job_state(out) != "new"):
        settings_refusal(out, composed_resolved(cfg, out), rules or RUN)


def _remove_if_empty(out: Path, new: bool) -> None:
    """The folder made only to hold its lock, when nothing else was written into it."""
    from memorization.base.folder_lock import NAME

    if new and out.is_dir() and [p.name for p in out.iterdir()] == [NAME]:
        (out / NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            out.rmdir()


@contextlib.contextmanager
def job_held(cfg: DictConfig, out: str | os.PathLike | None):
    """Inside a job (a run's or a study's): a worker of a parallel launcher ends with its
    launcher, and the job folder has one writer while the block runs (``wait_for_lock``)."""
    from memorization.base.folder_lock import hold
    from memorization.base.launch import die_with_launcher

    die_with_launcher()
    with hold(None if other_rank() else out, wait=bool(cfg.get("wait_for_lock", False)),
              what="job folder"):
        yield


_NO_ROOM = (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def error_line(err: BaseException) -> str:
    """A job's error as the one line it prints; a write refused for want of permission or
    space says where to look."""
    line = first_line(err)
    if isinstance(err, OSError) and err.errno in _NO_ROOM:
        line += " (is the output folder writable, with free space? hydra.run.dir=...)"
    return line


@contextlib.contextmanager
def sigterm_raises():
    """While a job runs, SIGTERM raises Lightning's SIGTERMException wherever the job is (a
    study between its fits, a scores job between chunks), as Lightning's own handler makes a
    fit stop: so that :func:`run_job` reports it, instead of the process dying without a word.
    Only where SIGTERM has its default action: a launcher that handles it (submitit, which
    requeues a SLURM job on SIGUSR2 and lets SIGTERM by) keeps its own handler."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def handler(signum, frame):
        raise SIGTERMException

    previous = None
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def interrupted(sig: signal.Signals, what: str) -> NoReturn:
    """The end of a command a signal stopped: one line, and 128 + the signal's number (a shell's
    code for it; never 0)."""
    print(f"interrupted by {sig.name}: {what} is unfinished; rerun the same command to resume "
          "it", file=sys.stderr)
    sys.exit(128 + sig)


def signal_of(exc: BaseException) -> signal.Signals | None:
    """The signal that ended a job, from what it raised: Lightning's SIGTERMException (a
    SystemExit with no code, which would exit 0), a KeyboardInterrupt (SIGINT), or the
    ``sys.exit(1)`` Lightning raises while it handles a KeyboardInterrupt; None for another
    exit."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException):
        return signal.SIGTERM
    if isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
        return signal.SIGINT
    return None


def run_job(cfg: DictConfig, out: Path | None, job: Callable[[DictConfig], object]) -> None:
    """A job inside Hydra, for every entry point: ``job(cfg)`` with the folder held
    (:func:`job_held`). An error is one line on the screen and ``FAILED`` in the folder (its
    traceback there); in a sweep the other jobs go on, else the process exits 2 for bad input
    or a refused folder, 1 for another error. A refused folder (held by another process, or
    holding another run) gets nothing written into it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from memorization.base.errors import Refusal, TrainingDiverged
    from memorization.base.launch import take_gpu
    from memorization.jobs.folder import mark_failed

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        with job_held(cfg, out):
            try:
                take_gpu(HydraConfig.get(), cfg.get("trainer"))  # before anything starts CUDA
                with sigterm_raises():  # a launcher's worker has no command's handler
                    job(cfg)
            except (KeyboardInterrupt, SystemExit) as exc:
                sig = signal_of(exc)
                if sig is None:
                    raise
                # a signal is never a success: 128 + its number, as a shell reports it, and
                # the sweep stops with it
                interrupted(sig, str(out) if out is not None else "the job")
            except Exception as exc:
                err = root_error(exc)
                if isinstance(err, Refusal):
                    raise err from None
                where = ""
                if out is not None:
                    try:
                        mark_failed(out, exc, err)
                        where = "" if isinstance(err, ConfigError | TrainingDiverged) else \
                            f" (traceback in {Path(out) / 'FAILED'})"
                    except OSError:
                        pass
                print(f"error: {error_line(err)}{where}", file=sys.stderr)
                if not multirun:
                    sys.exit(2 if isinstance(err, ConfigError) else 1)
    except Refusal as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        if not multirun:
            sys.exit(2)

