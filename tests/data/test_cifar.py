"""CIFAR readers on tiny tarballs and folders made here in the exact python-pickle format."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import pickletools
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import memorization.data.cifar as cifar
import memorization.data.download as download
from memorization.base.errors import ConfigError


def batch(n: int, label_key: bytes, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: list(rng.integers(0, 10, n)), b"batch_label": b"x"}


def make(ds: cifar.CifarDataset, root: Path, as_tar: bool) -> tuple[dict, cifar.CifarDataset]:
    batches = {name: batch(4, ds.label_key, i) for i, name in enumerate((*ds.train, *ds.test))}
    root.mkdir(parents=True, exist_ok=True)
    if as_tar:
        with tarfile.open(root / ds.tarball, "w:gz") as tar:
            for name, b in batches.items():
                data = pickle.dumps(b)
                info = tarfile.TarInfo(f"{ds.folder}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        md5 = hashlib.md5((root / ds.tarball).read_bytes()).hexdigest()
        ds = dataclasses.replace(ds, md5=md5)  # our tarball stands in for the official one
    else:
        (root / ds.folder).mkdir()
        for name, b in batches.items():
            (root / ds.folder / name).write_bytes(pickle.dumps(b))
    return batches, ds


@pytest.mark.parametrize("as_tar", [True, False])
@pytest.mark.parametrize("which", [cifar.CIFAR10, cifar.CIFAR100])
def test_reads_tarball_and_folder(tmp_path, which, as_tar):
    batches, ds = make(which, tmp_path, as_tar)
    raw = cifar.load_cifar(ds, root=str(tmp_path), download=False)
    n_train = 4 * len(ds.train)
    assert raw.x_train.shape == (n_train, 3, 32, 32) and raw.x_test.shape == (4, 3, 32, 32)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert raw.num_classes == ds.num_classes
    first = batches[ds.train[0]]
    assert raw.y_train[:4].tolist() == [int(v) for v in first[ds.label_key]]
    # a row is 1024 red, then green, then blue values: pixel (c=1, h=0, w=2) is entry 1024 + 2
    assert raw.x_train[0, 1, 0, 2].item() == pytest.approx(first[b"data"][0, 1026] / 255)
    assert raw.x_train[0, 2, 31, 31].item() == pytest.approx(first[b"data"][0, 3071] / 255)


def test_checksum_failure_refuses_the_tarball(tmp_path):
    _, ds = make(cifar.CIFAR10, tmp_path, as_tar=True)
    path = tmp_path / ds.tarball
    path.write_bytes(path.read_bytes()[:-100])  # a truncated download
    with pytest.raises(ConfigError, match="fails its checksum") as err:
        cifar.load_cifar(ds, root=str(tmp_path), download=False)
    assert "\n" not in str(err.value)


def test_damaged_batch_and_missing_files(tmp_path):
    _, ds = make(cifar.CIFAR10, tmp_path / "a", as_tar=False)
    (tmp_path / "a" / ds.folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="data_batch_3 is damaged"):
        cifar.load_cifar(ds, root=str(tmp_path / "a"), download=False)
    (tmp_path / "a" / ds.folder / "test_batch").unlink()
    with pytest.raises(ConfigError, match="lacks test_batch"):
        cifar.load_cifar(ds, root=str(tmp_path / "a"), download=False)
    with pytest.raises(ConfigError, match="missing cifar-10-python.tar.gz") as err:
        cifar.load_cifar(ds, root=str(tmp_path / "none"), download=False)
    assert str(tmp_path / "none") in str(err.value)


def test_download_keeps_only_a_tarball_with_the_right_md5(tmp_path, monkeypatch):
    _, ds = make(cifar.CIFAR100, tmp_path / "server", as_tar=True)
    good = (tmp_path / "server" / ds.tarball).read_bytes()
    served = {"bytes": good[:-50]}
    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(served["bytes"]))
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="missing"):
        cifar.load_cifar(ds, root=str(root), download=True)
    assert list(root.iterdir()) == []  # the bad download left nothing behind
    served["bytes"] = good
    assert cifar.load_cifar(ds, root=str(root), download=True).x_test.shape[0] == 4
    assert (root / ds.tarball).is_file()


@pytest.mark.parametrize("preset", ["zhang_cifar10_mlp1x512", "zhang_cifar10_mlp3x512"])
def test_zhang_presets_run_on_cifar_files(tmp_path, preset):
    from memorization.cli.run import train
    from tests.conftest import compose_config

    make(cifar.CIFAR10, tmp_path / "data", as_tar=False)
    cfg = compose_config([f"experiment={preset}", f"data.source_options.root={tmp_path / 'data'}",
                          "data.source_options.download=false", "logger=none",
                          "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                          "+trainer.fast_dev_run=true"], output_dir=tmp_path / "run")
    summary = train(cfg)
    assert summary["final"]["test/acc"] is not None


@pytest.mark.parametrize("as_tar", [True, False])
def test_parsed_arrays_are_cached_until_the_files_change(tmp_path, monkeypatch, as_tar):
    _, ds = make(cifar.CIFAR10, tmp_path, as_tar)
    first = cifar.load_cifar(ds, root=str(tmp_path), download=False)
    assert (tmp_path / "cifar10.parsed.npz").is_file()

    def fail(*args):
        raise AssertionError("parsed although the cache is valid")

    monkeypatch.setattr(cifar, "_read", fail)
    monkeypatch.setattr(cifar, "file_md5", fail)  # a cache hit does not re-hash the tarball
    again = cifar.load_cifar(ds, root=str(tmp_path), download=False)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    # a changed source (here only touched) is parsed again
    source = tmp_path / ds.tarball if as_tar else tmp_path / ds.folder / "test_batch"
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="parsed although"):
        cifar.load_cifar(ds, root=str(tmp_path), download=False)
    monkeypatch.undo()
    assert torch.equal(cifar.load_cifar(ds, root=str(tmp_path), download=False).x_test,
                       first.x_test)
    # cache=false neither writes nor reads it
    (tmp_path / "cifar10.parsed.npz").unlink()
    cifar.load_cifar(ds, root=str(tmp_path), download=False, cache=False)
    assert not (tmp_path / "cifar10.parsed.npz").exists()


class Py2Pickler(pickle._Pickler):
    """Writes what the official batches are: python 2 ``cPickle.dump(batch, f, 2)`` with numpy 1.

    Python 2's str (bytes here, and the str numpy's reduce returns) becomes (SHORT_)BINSTRING,
    and numpy's module paths are numpy 1's (``numpy.core.multiarray``).
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_global(self, obj, name=None):  # numpy's functions are saved through this
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[type] = save_global


def py2_batch(n: int, label_key: bytes, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5",
            label_key: [int(v) for v in rng.integers(0, 10, n)],  # python ints, as released
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def py2_dumps(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, 2).dump(obj)
    return f.getvalue()


def globals_of(raw: bytes) -> set[str]:
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


@pytest.mark.parametrize("which", [cifar.CIFAR10, cifar.CIFAR100])
def test_reads_batches_in_the_official_python2_format(tmp_path, which):
    names = (*which.train, *which.test)
    batches = {n: py2_batch(4, which.label_key, i) for i, n in enumerate(names)}
    (tmp_path / which.folder).mkdir()
    for n, b in batches.items():
        raw = py2_dumps(b)
        assert raw.startswith(b"\x80\x02}")  # protocol 2, a dict
        # all an official batch references, and so all the restricted unpickler needs for one
        assert globals_of(raw) == {"numpy.core.multiarray._reconstruct", "numpy.ndarray",
                                   "numpy.dtype"}
        (tmp_path / which.folder / n).write_bytes(raw)
    raw = cifar.load_cifar(which, root=str(tmp_path), download=False, cache=False)
    first = batches[which.train[0]]
    assert raw.y_train[:4].tolist() == first[which.label_key]
    assert raw.x_train[0, 2, 31, 31].item() == pytest.approx(first[b"data"][0, 3071] / 255)


class Payload:
    """Pickles as a call of ``func(*args)``: what a crafted batch file runs on a plain load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def plant(tmp_path: Path, payload, as_tar: bool = False) -> cifar.CifarDataset:
    """A CIFAR-10 folder (or tarball) whose data_batch_1 is ``{b"data": payload}``."""
    _, ds = make(cifar.CIFAR10, tmp_path, as_tar=False)
    folder = tmp_path / ds.folder
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": payload, b"labels": []}))
    if as_tar:
        with tarfile.open(tmp_path / ds.tarball, "w:gz") as tar:
            tar.add(folder, arcname=ds.folder)
        md5 = hashlib.md5((tmp_path / ds.tarball).read_bytes()).hexdigest()
        ds = dataclasses.replace(ds, md5=md5)  # suppose the published MD5 were the crafted one
        shutil.rmtree(folder)
    return ds


@pytest.mark.parametrize("as_tar", [False, True])
@pytest.mark.parametrize("how", ["exec", "system"])
def test_a_crafted_batch_is_refused_and_its_code_never_runs(tmp_path, how, as_tar):
    marker = tmp_path / "pwned"
    if how == "exec":
        payload, shown = Payload(exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"
    else:
        payload, shown = Payload(os.system, f"touch '{marker}'"), f"{os.system.__module__}.system"
    # the payload is real: a plain pickle.loads runs it
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()
    marker.unlink()

    ds = plant(tmp_path / "data", payload, as_tar)
    with pytest.raises(ConfigError, match="holds a pickled ") as err:
        cifar.load_cifar(ds, root=str(tmp_path / "data"), download=False, cache=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"data_batch_1 holds a pickled {shown}, which a CIFAR batch never does" in msg
    assert "refusing to load it (delete it and use the official tarball)" in msg
    assert not marker.exists()  # the code never ran
    assert not (tmp_path / "data" / "cifar10.parsed.npz").exists()


def test_numpy_globals_beyond_the_batch_format_are_refused(tmp_path):
    saved = tmp_path / "other.npy"
    np.save(saved, np.zeros(3))
    ds = plant(tmp_path / "a", Payload(np.load, str(saved)))
    with pytest.raises(ConfigError, match=r"data_batch_1 holds a pickled numpy\.load, which"):
        cifar.load_cifar(ds, root=str(tmp_path / "a"), download=False, cache=False)
    ds = plant(tmp_path / "b", Payload(np.testing.assert_equal, 1, 1))
    with pytest.raises(ConfigError, match=r"holds a pickled numpy\.testing\.\S*assert_equal"):
        cifar.load_cifar(ds, root=str(tmp_path / "b"), download=False, cache=False)


def test_a_crafted_global_name_still_gives_one_line(tmp_path):
    # STACK_GLOBAL takes module and name from strings, which may hold newlines
    module, name = b"os", b"system\nfake"
    raw = (b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name
           + b"\x93)R.")  # STACK_GLOBAL, then call it with no arguments
    _, ds = make(cifar.CIFAR10, tmp_path, as_tar=False)
    (tmp_path / ds.folder / "test_batch").write_bytes(raw)
    with pytest.raises(ConfigError, match="test_batch holds a pickled") as err:
        cifar.load_cifar(ds, root=str(tmp_path), download=False, cache=False)
    assert "\n" not in str(err.value)


def test_a_batch_whose_data_is_not_uint8_is_refused(tmp_path):
    _, ds = make(cifar.CIFAR10, tmp_path, as_tar=False)
    b = batch(4, ds.label_key, 0)
    b[b"data"] = b[b"data"].astype(object)
    (tmp_path / ds.folder / "data_batch_2").write_bytes(pickle.dumps(b))
    with pytest.raises(ConfigError, match=r"data_batch_2 is not a CIFAR batch \(its b'data' is "
                                          "object, not a uint8 array"):
        cifar.load_cifar(ds, root=str(tmp_path), download=False, cache=False)
