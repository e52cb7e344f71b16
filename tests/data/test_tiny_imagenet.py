"""Tiny ImageNet reader on a tiny copy made here in the exact on-disk layout, as folder and zip."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import memorization.data.download as download
import memorization.data.tiny_imagenet as ti  # registers the source
from memorization.base.errors import ConfigError
from memorization.data import load_source

WNIDS = ["n02", "n01", "n03"]  # not sorted: a class's index is its line in wnids.txt
# train files per class; n02's names check the natural order (_0, _2, _10, not _0, _10, _2)
TRAIN = {"n02": ["n02_0.JPEG", "n02_2.JPEG", "n02_10.JPEG"], "n01": ["n01_0.JPEG", "n01_1.png"],
         "n03": ["n03_0.JPEG", "n03_1.JPEG"]}
GRAY = "n01_0.JPEG"  # saved as a grayscale JPEG, like a few official images
# the official val set, our test split: (file, wnid) in annotation order
VAL = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n02"), ("val_2.JPEG", "n01"), ("val_3.JPEG", "n02")]


def image(seed: int) -> np.ndarray:
    """A smooth 64x64 RGB image (JPEG keeps it close), uint8."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return np.array(small.resize((64, 64), Image.BILINEAR))


def encode(a: np.ndarray, name: str, gray: bool = False) -> bytes:
    im = Image.fromarray(a).convert("L") if gray else Image.fromarray(a)
    out = io.BytesIO()
    im.save(out, "PNG" if name.endswith(".png") else "JPEG", quality=90)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """What Pillow makes of the file, (C, H, W): the expected pixels."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)


def files() -> dict[str, bytes]:
    """Every file of the dataset, by path inside tiny-imagenet-200/."""
    out = {"wnids.txt": ("\n".join(WNIDS) + "\n").encode()}
    seed = 0
    for w, names in TRAIN.items():
        out[f"train/{w}/{w}_boxes.txt"] = b"ignored\t0\t0\t63\t63\n"
        for n in names:
            out[f"train/{w}/images/{n}"] = encode(image(seed), n, gray=n == GRAY)
            seed += 1
    for n, _ in VAL:
        out[f"val/images/{n}"] = encode(image(seed), n)
        seed += 1
    out["val/val_annotations.txt"] = "".join(
        f"{n}\t{w}\t0\t1\t62\t63\n" for n, w in VAL).encode()
    out["test/images/test_0.JPEG"] = encode(image(99), "t.JPEG")  # unlabelled: not read
    return out


def make_folder(root: Path) -> dict[str, bytes]:
    content = files()
    for rel, data in content.items():
        path = root / ti.FOLDER / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return content


def zip_bytes(content: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        dirs = sorted({f"{ti.FOLDER}/{rel}".rsplit("/", 1)[0] + "/" for rel in content})
        for d in dirs:  # like the official zip, with folder entries
            z.writestr(d, b"")
        for rel, data in content.items():
            z.writestr(f"{ti.FOLDER}/{rel}", data)
    return out.getvalue()


def make_zip(root: Path, monkeypatch, method=zipfile.ZIP_DEFLATED) -> dict[str, bytes]:
    """The zip in root, with its MD5 standing in for the official one."""
    content = files()
    data = zip_bytes(content, method)
    root.mkdir(parents=True, exist_ok=True)
    (root / ti.ZIP).write_bytes(data)
    monkeypatch.setattr(ti, "MD5", hashlib.md5(data).hexdigest())
    return content


def make(root: Path, as_zip: bool, monkeypatch) -> dict[str, bytes]:
    return make_zip(root, monkeypatch) if as_zip else make_folder(root)


@pytest.mark.parametrize("as_zip", [False, True])
def test_reads_folder_and_zip(tmp_path, monkeypatch, as_zip):
    content = make(tmp_path, as_zip, monkeypatch)
    raw = load_source("tiny_imagenet", root=str(tmp_path), download=False, cache=False)
    assert raw.x_train.shape == (7, 3, 64, 64) and raw.x_test.shape == (4, 3, 64, 64)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert raw.x_test.dtype == torch.float32 and raw.y_test.dtype == torch.int64
    assert raw.num_classes == 3
    assert float(raw.x_train.min()) >= 0.0 and float(raw.x_train.max()) <= 1.0
    # classes in wnids.txt order (n02, n01, n03), each class's files in natural order
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 2, 2]
    order = [f"train/{w}/images/{n}" for w in WNIDS for n in TRAIN[w]]
    for i, rel in enumerate(order):
        expected = torch.from_numpy(decoded(content[rel]).astype(np.float32) / 255)
        assert torch.equal(raw.x_train[i], expected), rel
    # the test split follows val_annotations.txt
    assert raw.y_test.tolist() == [WNIDS.index(w) for _, w in VAL] == [2, 0, 1, 0]
    for i, (n, _) in enumerate(VAL):
        expected = decoded(content[f"val/images/{n}"]).astype(np.float32) / 255
        assert torch.equal(raw.x_test[i], torch.from_numpy(expected))
    gray = raw.x_train[order.index(f"train/n01/images/{GRAY}")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # gray -> RGB
    png = raw.x_train[order.index("train/n01/images/n01_1.png")]  # lossless: the exact pixels
    assert torch.equal(png * 255, torch.from_numpy(image(4).transpose(2, 0, 1)).float())


def test_folder_and_zip_agree_and_folder_wins(tmp_path, monkeypatch):
    make_folder(tmp_path / "f")
    make_zip(tmp_path / "z", monkeypatch)
    a = ti.load_tiny_imagenet(str(tmp_path / "f"), download=False, cache=False)
    b = ti.load_tiny_imagenet(str(tmp_path / "z"), download=False, cache=False)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    # both present: the folder is read (a broken zip beside it is never opened)
    (tmp_path / "f" / ti.ZIP).write_bytes(b"junk")
    c = ti.load_tiny_imagenet(str(tmp_path / "f"), download=False, cache=False)
    assert torch.equal(a.x_test, c.x_test)


def test_checksum_failure_refuses_the_zip(tmp_path, monkeypatch):
    make_zip(tmp_path, monkeypatch)
    monkeypatch.setattr(ti, "MD5", "0" * 32)  # not the file's
    with pytest.raises(ConfigError, match="tiny-imagenet-200.zip fails its checksum") as err:
        ti.load_tiny_imagenet(str(tmp_path), download=False)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.npz"))  # nothing cached from a refused file


def test_corrupt_zip_fails_with_one_line(tmp_path, monkeypatch):
    tmp_path.joinpath(ti.ZIP).write_bytes(b"PK\x03\x04 not really a zip" * 10)
    monkeypatch.setattr(ti, "MD5", hashlib.md5((tmp_path / ti.ZIP).read_bytes()).hexdigest())
    with pytest.raises(ConfigError, match="is not a readable zip") as err:
        ti.load_tiny_imagenet(str(tmp_path), download=False)
    assert "\n" not in str(err.value)


def test_damaged_member_in_the_zip(tmp_path, monkeypatch):
    content = make_zip(tmp_path, monkeypatch, method=zipfile.ZIP_STORED)
    data = bytearray((tmp_path / ti.ZIP).read_bytes())
    member = content["val/images/val_2.JPEG"]
    at = data.index(member) + len(member) // 2
    data[at] ^= 0xFF  # the stored CRC no longer matches
    (tmp_path / ti.ZIP).write_bytes(bytes(data))
    monkeypatch.setattr(ti, "MD5", hashlib.md5(bytes(data)).hexdigest())
    with pytest.raises(ConfigError, match="is damaged at tiny-imagenet-200/val/images/val_2"):
        ti.load_tiny_imagenet(str(tmp_path), download=False)


def test_missing_and_malformed_files_in_the_folder(tmp_path):
    make_folder(tmp_path)
    base = tmp_path / ti.FOLDER
    (base / "train/n03/images/n03_1.JPEG").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="n03_1.JPEG is not a readable image") as err:
        ti.load_tiny_imagenet(str(tmp_path), download=False, cache=False)
    assert "\n" not in str(err.value)
    Image.new("RGB", (32, 32)).save(base / "train/n03/images/n03_1.JPEG", "JPEG")
    with pytest.raises(ConfigError, match="is 32x32, not 64x64"):
        ti.load_tiny_imagenet(str(tmp_path), download=False, cache=False)
    (base / "val/val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ConfigError, match="names class 'n99', which wnids.txt does not list"):
        ti.load_tiny_imagenet(str(tmp_path), download=False, cache=False)
    (base / "val/val_annotations.txt").unlink()
    with pytest.raises(ConfigError, match="lacks val/val_annotations.txt"):
        ti.load_tiny_imagenet(str(tmp_path), download=False, cache=False)
    (base / "train/n01/images").rename(base / "train/n01/imgs")
    with pytest.raises(ConfigError, match="lacks train/n01/images/"):
        ti.load_tiny_imagenet(str(tmp_path), download=False, cache=False)


def test_missing_dataset_names_the_zip_and_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "none"
    with pytest.raises(ConfigError) as err:
        ti.load_tiny_imagenet(str(root), download=False)
    msg = str(err.value)
    assert "\n" not in msg and ti.ZIP in msg and f"{ti.FOLDER}/" in msg and str(root) in msg
    assert "download=true would fetch it from http://cs231n.stanford.edu/" in msg

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(ConfigError, match="missing tiny-imagenet-200.zip.*download from .* "
                                          "failed") as err:
        ti.load_tiny_imagenet(str(root), download=True)
    assert "\n" not in str(err.value)


def test_download_keeps_only_a_zip_with_the_right_md5(tmp_path, monkeypatch):
    good = zip_bytes(files())
    monkeypatch.setattr(ti, "MD5", hashlib.md5(good).hexdigest())
    served = {"bytes": good[:-100], "urls": []}

    def fake_urlopen(url, timeout=None):
        served["urls"].append(url)
        return io.BytesIO(served["bytes"])

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="missing"):
        ti.load_tiny_imagenet(str(root), download=True)
    assert list(root.iterdir()) == []  # the truncated download left nothing behind
    served["bytes"] = good
    raw = ti.load_tiny_imagenet(str(root), download=True)
    assert raw.y_test.tolist() == [2, 0, 1, 0]
    assert (root / ti.ZIP).read_bytes() == good
    assert served["urls"] == [ti.URL] * 2
    assert ti.URL == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def test_published_md5_is_pinned():
    # the value every downloader of the official zip pins (e.g. ContinualAI/avalanche)
    assert ti.MD5 == "90528d7ca1a48142e341f4ef8d21d0de"


def test_trains_a_step_through_the_config(tmp_path):
    from memorization.cli.run import train
    from tests.conftest import compose_config

    make_folder(tmp_path / "data")
    cfg = compose_config(["data=tiny_imagenet", f"data.source_options.root={tmp_path / 'data'}",
                          "data.source_options.download=false", "data.num_classes=3",
                          "data.on_device=false", "logger=none", "metrics=none",
                          "callbacks=no_checkpoint", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "+trainer.fast_dev_run=true",
                          "model.width=16"], output_dir=tmp_path / "run")
    assert list(cfg.data.shape) == [3, 64, 64]
    summary = train(cfg)
    assert summary["final"]["test/acc"] is not None
    assert (tmp_path / "data" / "tiny_imagenet.parsed.npz").is_file()  # cached by default
