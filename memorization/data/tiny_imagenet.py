"""Tiny ImageNet (CS231n): 200 classes of 64x64 colour images; 100,000 train (500 per class) and
10,000 labelled validation images, used here as the test split (the official test images carry
no labels).

Accepted forms, looked for in ``root`` (``data.source_options.root``, default
``~/.local/share/memorization/tiny_imagenet``): the official ``tiny-imagenet-200.zip``, read in
place without extracting, or its extracted folder ``tiny-imagenet-200/`` (preferred when both are
there). Inside: ``wnids.txt`` (the 200 WordNet ids, one a line: a class's index is its line),
``train/<wnid>/images/<wnid>_<k>.JPEG``, ``val/images/val_<k>.JPEG`` and
``val/val_annotations.txt`` (tab-separated: file name, wnid, four bounding-box ints). Training
images come class by class in ``wnids.txt`` order, each class's files in natural order of their
names; test images in the order of ``val_annotations.txt``. Images are decoded with Pillow and
converted to RGB (a few official images are grayscale).

A missing zip is downloaded from the official URL when ``download`` is on and the network
answers, and kept only if its MD5 is the published one (the value every library that downloads
it pins, e.g. ContinualAI/avalanche); a zip whose MD5 differs is refused with one line.

Decoding the 110,000 JPEGs takes a while (a progress bar shows it), so the parsed arrays are
cached as ``tiny_imagenet.parsed.npz`` (1.4 GB of uint8 pixels) in ``root`` and reused while the
zip or the folder's files keep their sizes and mtimes (see :mod:`memorization.data.cache`);
``cache=false`` turns that off.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from memorization.base.errors import ConfigError
from memorization.data import cache as cache_mod
from memorization.data.download import default_root, fetch, file_md5
from memorization.data.sources import RawData, register_source

log = logging.getLogger(__name__)

NAME = "tiny_imagenet"
ZIP = "tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"  # the zip's top folder
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the official zip (about 248 MB)
SIZE = 64
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
PARSER_VERSION = 1  # part of the cache key: bump when the parse below changes its output
_RETRY = (f"the copy is damaged: delete {ZIP} and let it be downloaded again, or re-extract "
          "the folder")


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class _Folder:
    """The extracted folder: members by path relative to ``tiny-imagenet-200/``."""

    def __init__(self, path: Path):
        self.path, self.where = path, str(path)

    def read(self, rel: str) -> bytes:
        try:
            return (self.path / rel).read_bytes()
        except FileNotFoundError as e:
            raise ConfigError(f"{self.path} lacks {rel}; re-extract {ZIP} into "
                              f"{self.path.parent}") from e
        except OSError as e:
            raise ConfigError(f"cannot read {self.path / rel} ({e})") from e

    def files(self, rel_dir: str) -> list[str]:
        folder = self.path / rel_dir
        if not folder.is_dir():
            raise ConfigError(f"{self.path} lacks {rel_dir}/; re-extract {ZIP} into "
                              f"{self.path.parent}")
        return [p.name for p in folder.iterdir() if p.is_file()]

    def key(self) -> str:
        # every file the parse can read: wnids.txt, train/, val/ (not the unlabelled test/)
        return f"folder {cache_mod.stat_key(self.path, ['wnids.txt', 'train', 'val'])}"


class _Zip:
    """The official zip, read in place."""

    def __init__(self, path: Path):
        self.path, self.where = path, f"{path}:{FOLDER}"
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ConfigError(f"{path} is not a readable zip ({e}); {_RETRY}") from e
        self.dirs: dict[str, list[str]] = {}
        for name in self.zf.namelist():
            if name.startswith(FOLDER + "/") and not name.endswith("/"):
                parent, _, base = name[len(FOLDER) + 1:].rpartition("/")
                self.dirs.setdefault(parent, []).append(base)

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(f"{FOLDER}/{rel}")
        except KeyError as e:
            raise ConfigError(f"{self.path} has no {FOLDER}/{rel}; {_RETRY}") from e
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise ConfigError(f"{self.path} is damaged at {FOLDER}/{rel} ({e}); "
                              f"{_RETRY}") from e

    def files(self, rel_dir: str) -> list[str]:
        if rel_dir not in self.dirs:
            raise ConfigError(f"{self.path} has no {FOLDER}/{rel_dir}/; {_RETRY}")
        return list(self.dirs[rel_dir])

    def close(self) -> None:
        self.zf.close()


def _lines(raw: bytes, where: str) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where} is not text; {_RETRY}") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def _index(src) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
    """The class ids, then (member, label) for the train and the test (official val) images."""
    wnids = _lines(src.read("wnids.txt"), f"{src.where}/wnids.txt")
    if not wnids or len(set(wnids)) != len(wnids):
        raise ConfigError(f"{src.where}/wnids.txt must list distinct class ids, one a line")
    label = {w: i for i, w in enumerate(wnids)}
    train = []
    for w in wnids:
        names = sorted((n for n in src.files(f"train/{w}/images")
                        if n.lower().endswith(IMAGE_SUFFIXES)), key=_natural)
        if not names:
            raise ConfigError(f"{src.where}/train/{w}/images holds no images; {_RETRY}")
        train += [(f"train/{w}/images/{n}", label[w]) for n in names]
    test = []
    where = f"{src.where}/val/val_annotations.txt"
    for i, line in enumerate(_lines(src.read("val/val_annotations.txt"), where), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise ConfigError(f"{where} line {i} is not 'file<TAB>wnid<TAB>bbox': {line[:60]!r}")
        if fields[1] not in label:
            raise ConfigError(f"{where} line {i} names class {fields[1]!r}, which wnids.txt "
                              "does not list")
        test.append((f"val/images/{fields[0]}", label[fields[1]]))
    if not test:
        raise ConfigError(f"{where} lists no images")
    return wnids, train, test


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image  # Pillow comes with matplotlib

    try:
        with Image.open(io.BytesIO(data)) as im:
            a = np.asarray(im.convert("RGB"))  # grayscale (and palette, CMYK) images -> RGB
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ConfigError(f"{where} is not a readable image ({type(e).__name__}: {e}); "
                          f"{_RETRY}") from e
    if a.shape != (SIZE, SIZE, 3):
        raise ConfigError(f"{where} is {a.shape[1]}x{a.shape[0]}, not {SIZE}x{SIZE}")
    return a


def _parse(src) -> cache_mod.Arrays:
    from tqdm import tqdm  # a dependency of lightning

    wnids, train, test = _index(src)
    x = np.empty((len(train) + len(test), 3, SIZE, SIZE), dtype=np.uint8)
    log.info("decoding %d images from %s (once: the arrays are cached)", len(x), src.where)
    with tqdm(total=len(x), desc=f"{NAME}: decoding", unit="img", mininterval=1.0,
              dynamic_ncols=True) as bar:
        for i, (member, _) in enumerate(train + test):
            x[i] = _decode(src.read(member), f"{src.where}/{member}").transpose(2, 0, 1)
            bar.update()
    y = np.array([lab for _, lab in train + test], dtype=np.int64)
    n = len(train)
    return cache_mod.Arrays(x[:n], y[:n], x[n:], y[n:], num_classes=len(wnids))


def _verify(zip_path: Path) -> None:
    if file_md5(zip_path) != MD5:
        raise ConfigError(f"{zip_path} fails its checksum (truncated or not the official "
                          "release); delete it and let it be downloaded again")


def _download(root: Path) -> bool:
    """Fetch the zip into root; kept only if its MD5 is the published one."""
    log.info("downloading %s (248 MB) into %s", URL, root)
    return fetch(URL, root / ZIP, lambda tmp: file_md5(tmp) == MD5)


@register_source(NAME)
def load_tiny_imagenet(root: str | None = None, download: bool = True,
                       cache: bool = True) -> RawData:
    folder = Path(root).expanduser() if root else default_root(NAME)
    present = (folder / FOLDER).is_dir() or (folder / ZIP).is_file()
    if not present and not (download and _download(folder)):
        how = (f"the download from {URL} failed (no network, or not the official file)"
               if download else "data.source_options.download=true would fetch it from "
               f"{URL} (needs the network)")
        raise ConfigError(f"{NAME}: missing {ZIP} (or its folder {FOLDER}/); put it in "
                          f"{folder} (or point data.source_options.root at it); {how}")
    tree, zip_path = folder / FOLDER, folder / ZIP
    if tree.is_dir():  # the folder wins when both are there
        def parse() -> cache_mod.Arrays:
            return _parse(_Folder(tree))

        key = _Folder(tree).key() if cache else ""
    else:
        def parse() -> cache_mod.Arrays:
            _verify(zip_path)  # a cache hit skips this: its key pins the verified file
            src = _Zip(zip_path)
            try:
                return _parse(src)
            finally:
                src.close()

        key = f"zip md5={MD5} {cache_mod.stat_key(folder, [ZIP])}" if cache else ""
    arrays = cache_mod.load_or_parse(cache_mod.cache_path(folder, NAME),
                                     f"{NAME} v{PARSER_VERSION} {key}", parse, cache)
    return arrays.to_raw()
