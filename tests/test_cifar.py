"""CIFAR readers on tiny tarballs and folders made here in the exact python-pickle format."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import memorization.data.cifar as cifar
import memorization.data.download as download
from memorization.errors import ConfigError


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
    from memorization.run import train
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
