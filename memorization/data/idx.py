"""MNIST and Fashion-MNIST from their standard distribution: four gzip IDX files.

Where the files are looked for, in order: ``root`` (``data.root``, default
``$XDG_DATA_HOME/memorization/<name>`` or ``~/.local/share/memorization/<name>``), then the
dataset's system folders (Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST in
``/usr/share/datasets/fashion-mnist``). A missing file is downloaded into ``root`` from the
dataset's official source when ``download`` is on and the network answers; otherwise loading fails
before training with one line naming the files and the folder to put them in.

Every file is checked before use: gzip's CRC (a truncated or damaged download fails it), the IDX
header against the payload size, and, where pinned below, the SHA-256 of the decompressed content
(so a re-compressed copy, like Debian's, still matches). A file that fails is never used; a failed
download is deleted. Fashion-MNIST's content hashes were computed from Debian's package. For
MNIST, no copy was at hand to hash the content, so its ``.gz`` files are checked against the
published MD5s of the official archives (the list torchvision and others use); an uncompressed
MNIST copy relies on the header check.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from memorization.base.errors import ConfigError
from memorization.data.download import default_root, fetch
from memorization.data.sources import RawData, register_source

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class IdxDataset:
    name: str
    urls: tuple[str, ...]  # base URLs, tried in order
    sha256: dict[str, str] = field(default_factory=dict)  # of the decompressed files
    md5_gz: dict[str, str] = field(default_factory=dict)  # of the official .gz archives
    system_dirs: tuple[str, ...] = ()


FASHION_MNIST = IdxDataset(
    "fashion_mnist",
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    sha256={
        "train-images-idx3-ubyte.gz":
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz":
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz":
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz":
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)
MNIST = IdxDataset(
    "mnist",
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    md5_gz={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)


def parse_idx(raw: bytes, source: str = "IDX data") -> np.ndarray:
    """An IDX byte string as an array; one-line ConfigError when the header does not fit."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ConfigError(f"{source} is not an IDX file (bad magic number); delete it and let it "
                          "be downloaded again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ConfigError(f"{source} holds {len(raw)} bytes but its header announces {expected} "
                          "(truncated or damaged); delete it and let it be downloaded again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def read_idx_file(path: Path, sha256: str | None = None,
                  md5_gz: str | None = None) -> np.ndarray:
    """Decompress (if .gz), verify, parse. ``md5_gz`` applies to a .gz file only."""
    try:
        packed = path.read_bytes()
        raw = gzip.decompress(packed) if path.suffix == ".gz" else packed
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError(f"{path} is damaged ({e}); delete it and let it be downloaded "
                          "again") from e
    if md5_gz is not None and path.suffix == ".gz" and hashlib.md5(packed).hexdigest() != md5_gz:
        raise ConfigError(f"{path} fails its checksum (MD5 differs from the official archive's); "
                          "delete it and let it be downloaded again")
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ConfigError(f"{path} fails its checksum (content differs from the official "
                          "release); delete it and let it be downloaded again")
    return parse_idx(raw, str(path))


def _find(ds: IdxDataset, filename: str, root: Path) -> Path | None:
    for folder in (root, *map(Path, ds.system_dirs)):
        for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def _download(ds: IdxDataset, filename: str, root: Path) -> Path | None:
    """Fetch one file into root, verified (CRC, checksum, header) before it gets its name."""
    def check(tmp: Path) -> bool:
        # the temporary name ends in .gz too, so the archive's MD5 applies
        read_idx_file(tmp, ds.sha256.get(filename), ds.md5_gz.get(filename))  # raises if bad
        return True

    for base in ds.urls:
        if fetch(base + filename, root / filename, check, timeout=30.0):
            return root / filename
    return None


def load_idx_dataset(ds: IdxDataset, root: str | None = None, download: bool = True) -> RawData:
    folder = Path(root).expanduser() if root else default_root(ds.name)
    paths = {}
    for key, filename in FILES.items():
        path = _find(ds, filename, folder)
        if path is None and download:
            path = _download(ds, filename, folder)
        if path is None:
            missing = [f for f in FILES.values() if _find(ds, f, folder) is None]
            raise ConfigError(f"{ds.name}: missing {', '.join(missing)}; put them in {folder} "
                              "(or point data.source_options.root at them), or let "
                              "data.source_options.download=true fetch them (needs the network)")
        paths[key] = path
    arrays = {k: read_idx_file(p, ds.sha256.get(FILES[k]), ds.md5_gz.get(FILES[k]))
              for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(f"{ds.name}: {split} images {x.shape} and labels {y.shape} do not "
                              "match; the files belong to different datasets")

    def images(a: np.ndarray) -> torch.Tensor:  # uint8 [N, H, W] -> float [N, 1, H, W] in [0, 1]
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return RawData(images(arrays["train_images"]), labels(arrays["train_labels"]),
                   images(arrays["test_images"]), labels(arrays["test_labels"]), num_classes=10)


@register_source("fashion_mnist")
def load_fashion_mnist(root: str | None = None, download: bool = True) -> RawData:
    return load_idx_dataset(FASHION_MNIST, root, download)


@register_source("mnist")
def load_mnist(root: str | None = None, download: bool = True) -> RawData:
    return load_idx_dataset(MNIST, root, download)
