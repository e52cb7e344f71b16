"""CIFAR-10 and CIFAR-100 from their python-pickle distribution.

Accepted forms, looked for in ``root`` (``data.source_options.root``, default
``~/.local/share/memorization/<name>``): the official tarball (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``), read in place without extracting, or its extracted folder
(``cifar-10-batches-py/``, ``cifar-100-python/``). A missing tarball is downloaded from the
official source when ``download`` is on and the network answers, and kept only if its MD5 matches
the published one; a tarball whose MD5 differs is refused with one line, so a truncated download
is never used. CIFAR-100 uses the fine labels (100 classes).

The batch files are pickles, and a plain ``pickle.load`` runs whatever code a pickle names. The
releases publish only the tarball's MD5, no per-file checksums, so the files of an extracted folder
cannot be checked against anything. Every batch, folder and tarball member alike, is therefore
read with a restricted unpickler (:class:`_BatchUnpickler`) that resolves only the few numpy
globals a CIFAR batch holds (see ``_ADMITTED``); a file naming any other global (``os.system``,
``builtins.exec``, ``numpy.load``, ...) is refused with one line before anything is called.

The parsed arrays are cached as ``<name>.parsed.npz`` (180 MB of uint8 pixels) in ``root`` and
reused while the tarball or the batch files keep their sizes and mtimes
(:mod:`memorization.data.cache`; ``cache=false`` turns it off): reading the tarball takes several
seconds (its MD5, then its gzip stream inflated twice: once to list the members, once to read
them), the cache under one.
"""

from __future__ import annotations

import importlib
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memorization.base.errors import ConfigError
from memorization.data import cache as cache_mod
from memorization.data.download import default_root, fetch, file_md5
from memorization.data.sources import RawData, register_source


@dataclass(frozen=True)
class CifarDataset:
    name: str
    tarball: str
    md5: str
    folder: str  # the top folder inside the tarball
    train: tuple[str, ...]  # batch files, in order
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    url: str


CIFAR10 = CifarDataset(
    "cifar10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
    b"labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
CIFAR100 = CifarDataset(
    "cifar100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals a CIFAR batch may name, under numpy 1's and numpy 2's module paths."""
    base = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    multiarray = importlib.import_module(f"{base}.multiarray")
    numeric = importlib.import_module(f"{base}.numeric")
    found = {
        # the official batches (python 2 cPickle, protocol 2, numpy 1): b"data" is a uint8
        # ndarray, pickled as _reconstruct(ndarray, (0,), b"b") plus its state with a dtype
        "multiarray._reconstruct": multiarray._reconstruct,
        "multiarray.scalar": multiarray.scalar,  # a numpy scalar, e.g. an np.int64 label
        # numpy under pickle protocol 5 writes the array as _frombuffer(bytes, dtype, shape, order)
        "numeric._frombuffer": numeric._frombuffer,
    }
    admitted: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray,
                                               ("numpy", "dtype"): np.dtype}
    for where, obj in found.items():
        module, name = where.split(".")
        for prefix in ("numpy.core", "numpy._core"):
            admitted[(f"{prefix}.{module}", name)] = obj
    return admitted


# (module, name) -> object; filled on first use, so importing this module costs nothing
_ADMITTED: dict[tuple[str, str], object] = {}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals of a CIFAR batch and refuses the rest.

    Resolving a global is the only way a pickle reaches code (REDUCE, BUILD, INST, OBJ, NEWOBJ and
    the copyreg extension codes all go through ``find_class``), so a pickle that names nothing but
    these numpy constructors can build arrays, dtypes and scalars and call nothing else.
    """

    def __init__(self, raw: bytes, where: str):
        super().__init__(io.BytesIO(raw), encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str) -> object:
        if not _ADMITTED:
            _ADMITTED.update(_numpy_globals())
        obj = _ADMITTED.get((module, name))
        if obj is None:
            shown = f"{module}.{name}"
            shown = shown if shown.isprintable() and len(shown) <= 200 else ascii(shown[:200])
            raise ConfigError(f"{self.where} holds a pickled {shown}, which a CIFAR batch never "
                              "does; refusing to load it (delete it and use the official tarball)")
        return obj

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("a CIFAR batch has no persistent ids")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        batch = _BatchUnpickler(raw, where).load()
    except ConfigError:
        raise
    except Exception as e:  # a damaged file can fail in many ways
        raise ConfigError(f"{where} is damaged ({type(e).__name__}); delete it and let it be "
                          "downloaded again") from e
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ConfigError(f"{where} is not a CIFAR batch (no b'data')")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise ConfigError(f"{where} is not a CIFAR batch (its b'data' is "
                          f"{getattr(data, 'dtype', type(data).__name__)}, not a uint8 array)")
    return batch


def _stack(ds: CifarDataset, batches: list[dict], where: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[ds.label_key], dtype=np.int64) for b in batches])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ConfigError(f"{where}: images {data.shape} and labels {labels.shape} do not form "
                          "CIFAR batches of 3x32x32")
    # rows are 1024 red, 1024 green, 1024 blue values, each row-major 32x32: (C, H, W) as is
    return data.reshape(-1, 3, 32, 32), labels


def _read(ds: CifarDataset, root: Path) -> cache_mod.Arrays:
    folder, tarball = root / ds.folder, root / ds.tarball
    names = (*ds.train, *ds.test)
    if folder.is_dir():
        where = str(folder)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ConfigError(f"{folder} lacks {', '.join(missing)}; re-extract {ds.tarball} "
                              f"into {root}")
        raw = {n: (folder / n).read_bytes() for n in names}
    else:
        where = str(tarball)
        if file_md5(tarball) != ds.md5:
            raise ConfigError(f"{tarball} fails its checksum (truncated or not the official "
                              "release); delete it and let it be downloaded again")
        with tarfile.open(tarball, "r:gz") as tar:
            raw = {}
            for n in names:
                try:
                    raw[n] = tar.extractfile(tar.getmember(f"{ds.folder}/{n}")).read()
                except KeyError as e:
                    raise ConfigError(f"{tarball} has no {ds.folder}/{n}") from e
    batches = {n: _unpickle(raw[n], f"{where}/{n}") for n in names}
    train = _stack(ds, [batches[n] for n in ds.train], where)
    test = _stack(ds, [batches[n] for n in ds.test], where)
    return cache_mod.Arrays(*train, *test, num_classes=ds.num_classes)


def _download(ds: CifarDataset, root: Path) -> bool:
    """Fetch the tarball into root; kept only if its MD5 is the published one."""
    return fetch(ds.url, root / ds.tarball, lambda tmp: file_md5(tmp) == ds.md5)


def _key(ds: CifarDataset, root: Path) -> str:
    """What the cache is valid for: the tarball or the batch files, as _read would pick them."""
    if (root / ds.folder).is_dir():
        names = [f"{ds.folder}/{n}" for n in (*ds.train, *ds.test)]
        return f"{ds.name} folder {cache_mod.stat_key(root, names)}"
    return f"{ds.name} tarball md5={ds.md5} {cache_mod.stat_key(root, [ds.tarball])}"


def load_cifar(ds: CifarDataset, root: str | None = None, download: bool = True,
               cache: bool = True) -> RawData:
    folder = Path(root).expanduser() if root else default_root(ds.name)
    present = (folder / ds.folder).is_dir() or (folder / ds.tarball).is_file()
    if not present and not (download and _download(ds, folder)):
        raise ConfigError(f"{ds.name}: missing {ds.tarball} (or its folder {ds.folder}/); put it "
                          f"in {folder} (or point data.source_options.root at it), or let "
                          "data.source_options.download=true fetch it (needs the network)")
    # a cache hit skips the tarball's MD5 check: the key pins the file that passed it
    arrays = cache_mod.load_or_parse(cache_mod.cache_path(folder, ds.name),
                                     _key(ds, folder) if cache else "",
                                     lambda: _read(ds, folder), cache)
    return arrays.to_raw()


@register_source("cifar10")
def load_cifar10(root: str | None = None, download: bool = True, cache: bool = True) -> RawData:
    return load_cifar(CIFAR10, root, download, cache)


@register_source("cifar100")
def load_cifar100(root: str | None = None, download: bool = True, cache: bool = True
                   ) -> RawData:
    return load_cifar(CIFAR100, root, download, cache)
