"""The parsed-array cache: reused while the sources are unchanged, rebuilt when they change or the
cache is damaged, written atomically, skipped where root is read-only."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import memorization.data.cache as cache
import memorization.data.tiny_imagenet as ti
from tests.data.test_tiny_imagenet import make_folder, make_zip

CACHE = "tiny_imagenet.parsed.npz"


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Counts real parses of the Tiny ImageNet source."""
    calls, real = [], ti._parse
    monkeypatch.setattr(ti, "_parse", lambda src: calls.append(src.where) or real(src))
    return calls


def load(root: Path, **kw):
    return ti.load_tiny_imagenet(str(root), download=False, **kw)


def same(a, b) -> bool:
    keys = ("x_train", "y_train", "x_test", "y_test")
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in keys) \
        and a.num_classes == b.num_classes


@pytest.mark.parametrize("as_zip", [False, True])
def test_second_load_reads_the_cache(tmp_path, monkeypatch, parses, as_zip):
    make_zip(tmp_path, monkeypatch) if as_zip else make_folder(tmp_path)
    first = load(tmp_path)
    assert (tmp_path / CACHE).is_file() and len(parses) == 1
    with np.load(tmp_path / CACHE) as f:  # pixels stored as uint8, the key inside
        assert f["x_train"].dtype == np.uint8 and f["x_train"].shape == (7, 3, 64, 64)
        assert str(f["key"]).startswith(f"tiny_imagenet v{ti.PARSER_VERSION} ")

    def fail(*args):
        raise AssertionError("parsed although the cache is valid")

    monkeypatch.setattr(ti, "_parse", fail)
    monkeypatch.setattr(ti, "file_md5", fail)  # a cache hit does not re-hash the zip either
    second = load(tmp_path)
    assert same(first, second) and second.x_train.dtype == torch.float32


def test_the_cache_gives_the_parsed_values_exactly(tmp_path):
    make_folder(tmp_path)
    parsed = load(tmp_path, cache=False)
    load(tmp_path)  # writes the cache
    assert same(parsed, load(tmp_path))  # reads it


def test_changed_folder_invalidates_the_cache(tmp_path, parses):
    make_folder(tmp_path)
    base = tmp_path / ti.FOLDER
    before = load(tmp_path)
    load(tmp_path)
    assert len(parses) == 1
    # an image replaced by another one
    Image.new("RGB", (64, 64), (255, 0, 0)).save(base / "val/images/val_1.JPEG", "JPEG")
    after = load(tmp_path)
    assert len(parses) == 2 and not torch.equal(before.x_test[1], after.x_test[1])
    assert after.x_test[1, 0].mean() > 0.9 and after.x_test[1, 1].mean() < 0.1
    load(tmp_path)
    assert len(parses) == 2
    # only touched: same size and content, new mtime
    st = (base / "wnids.txt").stat()
    os.utime(base / "wnids.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load(tmp_path)
    assert len(parses) == 3
    # a file added
    Image.new("RGB", (64, 64)).save(base / "train/n03/images/n03_2.JPEG", "JPEG")
    assert load(tmp_path).y_train.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and len(parses) == 4
    # a file removed
    (base / "train/n03/images/n03_2.JPEG").unlink()
    assert len(load(tmp_path).y_train) == 7 and len(parses) == 5


def test_replaced_zip_invalidates_the_cache(tmp_path, monkeypatch, parses):
    make_zip(tmp_path, monkeypatch)
    load(tmp_path)
    st = (tmp_path / ti.ZIP).stat()
    os.utime(tmp_path / ti.ZIP, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load(tmp_path)
    assert len(parses) == 2
    load(tmp_path)
    assert len(parses) == 2
    # another pinned MD5 (a new release of this reader): the cached file is verified again
    good = ti.MD5
    monkeypatch.setattr(ti, "MD5", "f" * 32)
    with pytest.raises(ti.ConfigError, match="fails its checksum"):
        load(tmp_path)
    # a different file: verified before use, and refused here
    monkeypatch.setattr(ti, "MD5", good)
    (tmp_path / ti.ZIP).write_bytes((tmp_path / ti.ZIP).read_bytes() + b"\0")
    with pytest.raises(ti.ConfigError, match="fails its checksum"):
        load(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign npz", "wrong dtype"])
def test_unreadable_cache_is_rebuilt_with_a_warning(tmp_path, parses, caplog, damage):
    make_folder(tmp_path)
    first = load(tmp_path)
    path = tmp_path / CACHE
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(data[:200] + bytes(len(data) - 200))
    elif damage == "foreign npz":
        np.savez(path, something=np.arange(3))
    else:  # ours in form, with the current key, but float64 pixels: not what we write
        with np.load(path) as f:
            arrays = dict(f)
        arrays["x_train"] = arrays["x_train"].astype(np.float64)
        np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="memorization.data.cache"):
        again = load(tmp_path)
    assert len(parses) == 2 and same(first, again)
    assert any("ignoring the unreadable cache" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert cache.read_cache(path, str(np.load(path)["key"])) is not None  # rebuilt, valid


def test_stale_cache_is_replaced_without_a_warning(tmp_path, parses, caplog):
    make_folder(tmp_path)
    load(tmp_path)
    (tmp_path / ti.FOLDER / "wnids.txt").write_text("n03\nn02\nn01\n")  # classes reordered
    with caplog.at_level(logging.INFO, logger="memorization.data.cache"):
        raw = load(tmp_path)
    # training images come class by class in the new order: n03 (2), n02 (3), n01 (2)
    assert raw.y_train.tolist() == [0, 0, 1, 1, 1, 2, 2] and len(parses) == 2
    assert raw.y_test.tolist() == [0, 1, 2, 1]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("out of date" in r.getMessage() for r in caplog.records)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch, caplog):
    make_folder(tmp_path)

    def disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half of a cache")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", disk_full)
    with caplog.at_level(logging.WARNING, logger="memorization.data.cache"):
        raw = load(tmp_path)
    assert raw.x_train.shape == (7, 3, 64, 64)  # the load itself goes on
    assert sorted(p.name for p in tmp_path.iterdir()) == [ti.FOLDER]  # no cache, no temp file
    assert any("could not write the cache" in r.getMessage() for r in caplog.records)


def test_interrupted_write_is_never_read(tmp_path, parses):
    make_folder(tmp_path)
    load(tmp_path)
    good = (tmp_path / CACHE).read_bytes()
    (tmp_path / CACHE).unlink()
    # what a process killed while writing leaves: a complete-looking file under a temp name
    (tmp_path / f".{CACHE}.123.abcd.part.npz").write_bytes(good)
    load(tmp_path)
    assert len(parses) == 2 and (tmp_path / CACHE).read_bytes() != b""


def test_read_only_root_skips_caching(tmp_path, monkeypatch, caplog):
    make_folder(tmp_path)

    def read_only(*args, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    # the cache module's own open() (its only one is the write's), not the builtin everywhere
    monkeypatch.setattr(cache, "open", read_only, raising=False)
    with caplog.at_level(logging.INFO, logger="memorization.data.cache"):
        raw = load(tmp_path)
    assert raw.y_test.tolist() == [2, 0, 1, 0] and not (tmp_path / CACHE).exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not writable" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_for_real(tmp_path):
    make_folder(tmp_path)
    tmp_path.chmod(0o555)
    try:
        assert load(tmp_path).x_train.shape[0] == 7 and not (tmp_path / CACHE).exists()
    finally:
        tmp_path.chmod(0o755)


def test_cache_off_neither_reads_nor_writes(tmp_path, parses):
    make_folder(tmp_path)
    load(tmp_path, cache=False)
    assert not (tmp_path / CACHE).exists()
    load(tmp_path)
    load(tmp_path, cache=False)
    assert len(parses) == 3


def test_cache_file_gets_ordinary_permissions(tmp_path):
    make_folder(tmp_path)
    old = os.umask(0o022)
    try:
        load(tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / CACHE).stat().st_mode & 0o777 == 0o644


def test_load_or_parse_generic(tmp_path):
    rng = np.random.default_rng(0)
    arrays = cache.Arrays(rng.random((4, 2, 3), dtype=np.float32), np.arange(4),
                          rng.random((2, 2, 3), dtype=np.float32), np.array([1, 0]), 4)
    path = tmp_path / "sub" / "x.parsed.npz"  # the folder is made when missing
    calls = []

    def parse():
        calls.append(1)
        return arrays

    a = cache.load_or_parse(path, "key 1", parse)
    b = cache.load_or_parse(path, "key 1", parse)
    assert len(calls) == 1 and np.array_equal(a.x_train, b.x_train)  # float32 kept as is
    assert b.x_train.dtype == np.float32 and b.y_train.dtype == np.int64
    cache.load_or_parse(path, "key 2", parse)
    assert len(calls) == 2
    raw = b.to_raw()
    assert torch.equal(raw.x_test, torch.from_numpy(arrays.x_test)) and raw.num_classes == 4


def test_to_float_is_the_usual_division():
    x = np.arange(256, dtype=np.uint8).reshape(4, 1, 8, 8)
    assert torch.equal(cache.to_float(x), torch.from_numpy(x.astype(np.float32) / 255.0))


def test_stat_key_sees_size_mtime_names_and_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "d" / "e" / "b"
    b.parent.mkdir(parents=True)
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    k = cache.stat_key(tmp_path, ["a", "d"])
    assert k == cache.stat_key(tmp_path, ["d", "a"])  # order does not matter
    st = b.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # deep in a folder
    assert cache.stat_key(tmp_path, ["a", "d"]) != k
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.stat_key(tmp_path, ["a", "d"]) == k
    b.write_bytes(b"22")
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.stat_key(tmp_path, ["a", "d"]) != k  # size
    b.write_bytes(b"2")
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.stat_key(tmp_path, ["a", "d"]) == k
    b.rename(b.with_name("c"))
    assert cache.stat_key(tmp_path, ["a", "d"]) != k  # names
    assert cache.stat_key(tmp_path, ["x"]) != cache.stat_key(tmp_path, [])  # missing counts
