"""MNIST-family IDX readers on tiny files made here in the exact on-disk format."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

import memorization.data.download as download
import memorization.data.idx as idx
from memorization.base.errors import ConfigError
from memorization.data import load_source

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX format: 0, 0, dtype code 0x08 (ubyte), ndim, big-endian dims, then the data."""
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.astype(np.uint8).tobytes()


def make_files(folder: Path, n_train=5, n_test=3, gz=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": (np.arange(n_test) + 7) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in idx.FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / name).write_bytes(gzip.compress(data))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(data)
    return arrays


TINY = idx.IdxDataset("tiny", urls=("http://unreachable.invalid/",))


@pytest.mark.parametrize("gz", [True, False])
def test_reads_shapes_dtypes_labels(tmp_path, gz):
    arrays = make_files(tmp_path, gz=gz)
    raw = idx.load_idx_dataset(TINY, root=str(tmp_path), download=False)
    assert raw.x_train.shape == (5, 1, 28, 28) and raw.x_test.shape == (3, 1, 28, 28)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert raw.y_train.tolist() == [0, 1, 2, 3, 4] and raw.y_test.tolist() == [7, 8, 9]
    assert torch.allclose(raw.x_train[2, 0] * 255, torch.from_numpy(
        arrays["train_images"][2].astype(np.float32)), atol=1e-4)
    assert float(raw.x_train.min()) >= 0.0 and float(raw.x_train.max()) <= 1.0


def test_checksum_failure_is_one_clear_line(tmp_path):
    make_files(tmp_path)
    wrong = idx.IdxDataset("tiny", urls=(), sha256={"train-labels-idx1-ubyte.gz": "0" * 64})
    with pytest.raises(ConfigError, match="fails its checksum") as err:
        idx.load_idx_dataset(wrong, root=str(tmp_path), download=False)
    assert "\n" not in str(err.value)
    # the right hash passes
    data = gzip.decompress((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    right = idx.IdxDataset("tiny", urls=(), sha256={
        "train-labels-idx1-ubyte.gz": hashlib.sha256(data).hexdigest()})
    assert len(idx.load_idx_dataset(right, root=str(tmp_path), download=False).y_train) == 5


def test_mnist_archives_are_checked_by_their_published_md5(tmp_path):
    make_files(tmp_path)
    # our fabricated archives are not the official ones: MNIST's pinned MD5s refuse them
    with pytest.raises(ConfigError, match="fails its checksum .MD5"):
        idx.load_idx_dataset(idx.MNIST, root=str(tmp_path), download=False)
    packed = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    md5 = {f: hashlib.md5((tmp_path / f).read_bytes()).hexdigest() for f in idx.FILES.values()}
    ours = idx.IdxDataset("tiny", urls=(), md5_gz=md5)
    assert len(idx.load_idx_dataset(ours, root=str(tmp_path), download=False).y_train) == 5
    # an uncompressed copy has no archive to check: the header check remains
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(gzip.decompress(packed))
    assert len(idx.load_idx_dataset(ours, root=str(tmp_path), download=False).y_train) == 5


def test_truncated_and_malformed_files_are_refused(tmp_path):
    make_files(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])  # a cut-off download: gzip's CRC/length fails
    with pytest.raises(ConfigError, match="damaged"):
        idx.load_idx_dataset(TINY, root=str(tmp_path), download=False)
    with pytest.raises(ConfigError, match="truncated or damaged"):
        idx.parse_idx(idx_bytes(np.zeros((2, 3, 3)))[:-1], "x")
    with pytest.raises(ConfigError, match="bad magic"):
        idx.parse_idx(b"\x01\x02\x08\x01\x00\x00\x00\x00", "x")


def test_missing_files_name_the_files_and_the_folder(tmp_path):
    with pytest.raises(ConfigError) as err:
        idx.load_idx_dataset(TINY, root=str(tmp_path / "empty"), download=False)
    msg = str(err.value)
    assert all(name in msg for name in idx.FILES.values()) and str(tmp_path / "empty") in msg
    assert "\n" not in msg


def test_download_verifies_before_the_file_gets_its_name(tmp_path, monkeypatch):
    source = tmp_path / "server"
    make_files(source)
    served = {name: (source / name).read_bytes() for name in idx.FILES.values()}
    served["t10k-labels-idx1-ubyte.gz"] = served["t10k-labels-idx1-ubyte.gz"][:-8]  # damaged

    def fake_urlopen(url, timeout=None):
        return io.BytesIO(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="missing t10k-labels-idx1-ubyte.gz"):
        idx.load_idx_dataset(TINY, root=str(root), download=True)
    # the good files were kept, the damaged one was not, and nothing half-written remains
    assert sorted(p.name for p in root.iterdir()) == sorted(
        n for n in idx.FILES.values() if n != "t10k-labels-idx1-ubyte.gz")
    served["t10k-labels-idx1-ubyte.gz"] = (source / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = idx.load_idx_dataset(TINY, root=str(root), download=True)
    assert raw.y_test.tolist() == [7, 8, 9]


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian(tmp_path):
    raw = load_source("fashion_mnist", root=str(tmp_path), download=False)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    # Fashion-MNIST's first training labels: ankle boot, T-shirt, T-shirt, dress, T-shirt, ...
    assert raw.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert round(float(raw.x_train[0].sum() * 255)) == 76247  # pixel sum of the first image
    assert torch.bincount(raw.y_test).tolist() == [1000] * 10


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_trains_a_few_steps_on_real_fashion_mnist(tmp_path):
    from memorization.cli.run import train
    from tests.conftest import compose_config

    cfg = compose_config(["data=fashion_mnist", f"data.source_options.root={tmp_path}",
                          "data.source_options.download=false", "data.val_size=5000",
                          "data.eval_train=false", "logger=none", "metrics=none",
                          "callbacks=no_checkpoint", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "trainer.max_epochs=1",
                          "+trainer.limit_train_batches=20", "model.width=64"],
                         output_dir=tmp_path / "run")
    final = train(cfg)["final"]
    assert final["test/acc"] > 0.3 and final["val/acc"] > 0.3  # 20 steps learn something
