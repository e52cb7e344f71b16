"""One LightningDataModule for every source: tensors in memory, batches by indexing.

Pipeline in ``setup``: load the source (raw pixels in [0, 1]) -> carve the validation hold-out from
the training split -> corrupt the training part -> standardize every split with the *clean*
training statistics -> move everything to the accelerator when ``on_device`` and it fits.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from memorization.base.distributed import epoch_generator, rank_world
from memorization.base.errors import ConfigError, check_bool, check_number, shown
from memorization.data.augment import AugmentConfig, augment
from memorization.data.preprocess import center_crop, per_image_whitening
from memorization.data.sources import SOURCES, RawData, load_source
from memorization.noise import CORRUPTIONS, CorruptionRecord, corrupt_dataset

log = logging.getLogger(__name__)


@dataclass
class NoiseConfig:
    """The ``noise`` group: which corruption (memorization/noise/), of which fraction."""

    name: str = "none"
    p: float = 0.0  # the probability that a training sample is corrupted
    seed: int = 0  # the corruption's own seed (the training seed is the top-level seed)
    apply_to_test: bool = False  # shuffled_pixels only: permute test and validation images too

    def __post_init__(self):
        if self.name not in CORRUPTIONS:
            raise ConfigError(f"noise.name={self.name!r} is unknown; choose one of: "
                              f"{', '.join(sorted(CORRUPTIONS))}")
        check_number(self.p, "noise.p", lo=0, hi=1,
                     what=": the probability that a training sample is corrupted")
        check_number(self.seed, "noise.seed", integer=True, lo=0)
        check_bool(self.apply_to_test, "noise.apply_to_test")


@dataclass
class DataConfig:
    """The ``data`` group: every key each data option accepts, with its default."""

    source: str = "digits"  # a registered source (memorization/data/sources.py)
    shape: tuple[int, ...] = (1, 8, 8)  # declared, so a model can be checked before loading
    num_classes: int = 10
    source_options: dict = field(default_factory=dict)  # the source loader's own keywords
    batch_size: int = 128
    eval_batch_size: int = 1024
    # validation hold-out carved from train: a count (>= 1), or a fraction in (0, 1)
    val_size: float = 0
    val_seed: int = 0
    # training samples kept (after the validation hold-out, before corruption, so the noise
    # fraction stays exact): a count (>= 1), a fraction in (0, 1), or null for all of them;
    # a uniform random subset drawn from train_seed (Arpit et al.'s 1,000 images, Fig. 6's sizes)
    train_size: float | None = None
    train_seed: int = 0
    normalize: bool = True  # per-channel standardization with the clean training statistics
    center_crop: int | None = None  # Zhang et al.'s CIFAR recipe: 28
    per_image_whitening: bool = False  # Zhang et al.'s CIFAR recipe (instead of normalize)
    on_device: bool = True  # keep the tensors on the accelerator when they fit
    shuffle_seed: int | None = 0  # the training batches' order; null: a fresh one
    eval_train: bool = True  # evaluate the whole training set in eval mode every epoch
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training batches, on device

    def __post_init__(self):
        self.shape = tuple(self.shape)
        self.source_options = dict(self.source_options or {})
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.source not in SOURCES:
            raise ConfigError(f"data.source={self.source!r} is unknown; choose one of: "
                              f"{', '.join(sorted(SOURCES))}")
        if not (self.shape and all(isinstance(d, int) and d >= 1 for d in self.shape)):
            raise ConfigError(f"data.shape={list(self.shape)} must be a list of positive "
                              "integers")
        check_number(self.num_classes, "data.num_classes", integer=True, lo=2)
        for key in ("batch_size", "eval_batch_size"):
            check_number(getattr(self, key), f"data.{key}", integer=True, lo=1)
        v = check_number(self.val_size, "data.val_size", lo=0,
                         what=" (a count, or a fraction of the training split in (0, 1))")
        if v >= 1 and v != int(v):
            raise ConfigError(f"data.val_size={v} must be an integer count or a fraction in "
                              "(0, 1) of the training split")
        t = check_number(self.train_size, "data.train_size", lo=0, allow_none=True,
                         what=" (a count, a fraction in (0, 1), or null for every sample)")
        if t is not None and (t == 0 or (t >= 1 and t != int(t))):
            raise ConfigError(f"data.train_size={shown(t)} must be an integer count >= 1, a "
                              "fraction in (0, 1), or null (every training sample)")
        check_number(self.train_seed, "data.train_seed", integer=True, lo=0)
        check_number(self.center_crop, "data.center_crop", integer=True, lo=1, allow_none=True)
        for key in ("normalize", "per_image_whitening", "on_device", "eval_train"):
            check_bool(getattr(self, key), f"data.{key}")
        if self.per_image_whitening and self.normalize:
            raise ConfigError("data.per_image_whitening=true replaces data.normalize: set "
                              "data.normalize=false")
        if self.augment.enabled and len(self.shape) != 3:
            raise ConfigError(f"data.augment transforms images (C, H, W), but data.shape="
                              f"{list(self.shape)}; turn data.augment off for this data")


class TensorDictDataset(Dataset):
    """A dict of equally long tensors; ``ds[idx]`` with an index *tensor* returns a batch."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {t.shape[0] for t in tensors.values()}
        if len(lengths) != 1:
            raise ConfigError(f"tensors of different lengths: {sorted(lengths)}")
        self.tensors = tensors
        self.n = lengths.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = idx.to(next(iter(self.tensors.values())).device, non_blocking=True)
        # index_select, not v[idx]: 3x faster for a batch of images on a CPU (28 against 82 us
        # for 128 28x28 images out of 20,000 here)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}


class EpochBatchSampler(Sampler):
    """Yields index tensors, one per batch, sharded over DDP ranks.

    Training (``shuffle``): a fresh permutation per epoch from ``seed + epoch``, padded by wrapping
    around so every rank runs the same number of steps. Evaluation: sequential and *unpadded*, rank
    r takes samples r, r+W, ..., so sums over ranks count every sample exactly once.
    The trainer must run with ``use_distributed_sampler=False`` (this sampler shards itself).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int | None = 0,
                 drop_last: bool = False):
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        # no seed: a fresh one from the OS (torch.seed() would reseed the global generator)
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before every epoch
        self.epoch = epoch

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        return rank_world()

    def _indices(self) -> torch.Tensor:
        rank, world = self._rank_world()
        if not self.shuffle:
            return torch.arange(rank, self.n, world)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        total = math.ceil(self.n / world) * world
        if total > self.n:  # pad by repeating the permutation (several times if world > n)
            perm = perm.repeat(math.ceil(total / self.n))[:total]
        return perm[rank::world]

    def __iter__(self):
        idx = self._indices()
        if idx.numel() == 0:  # a rank with no evaluation samples takes no step
            return
        for batch in idx.split(self.batch_size):
            if self.drop_last and len(batch) < self.batch_size:
                break
            yield batch

    def __len__(self) -> int:
        rank, world = self._rank_world()
        n = math.ceil(self.n / world) if self.shuffle else len(range(rank, self.n, world))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def whole_batch(batch):
    """The collate function of a loader whose sampler yields whole batches (index tensors)."""
    return batch


class DataModule(L.LightningDataModule):
    """Wraps any registered source; see the module docstring for the pipeline."""

    def __init__(self, noise: dict | NoiseConfig | None = None, **data):
        super().__init__()
        self.cfg = DataConfig(**data)
        self.augment = self.cfg.augment
        self._aug_gen: tuple[tuple, torch.Generator] | None = None
        self.noise = noise if isinstance(noise, NoiseConfig) else NoiseConfig(**(noise or {}))
        self.record: CorruptionRecord | None = None
        self._raw: RawData | None = None  # loaded by prepare_data, consumed by setup
        self.splits: dict[str, TensorDictDataset] = {}
        self.mean = self.std = None  # per-channel normalization, for converting pixel units
        self._samplers: list[EpochBatchSampler] = []
        # where setup puts the tensors; None: the accelerator when they fit (_target_device)
        self.place: torch.device | None = None

    @property
    def eval_splits(self) -> list[str]:
        """Names of the validation-loop dataloaders, in order."""
        if not self.splits:
            raise RuntimeError("DataModule.setup() has not run")
        names = ["train"] if self.cfg.eval_train else []
        return names + (["val"] if "val" in self.splits else []) + ["test"]

    # -- setup -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Lightning calls this before any logger starts a run: bad data settings fail here first
        self._raw = self._load()

    def _load(self) -> RawData:
        cfg = self.cfg
        raw = load_source(cfg.source, **cfg.source_options)
        if cfg.center_crop is not None:
            size = cfg.center_crop
            if len(raw.shape) != 3 or size > min(raw.shape[1:]):
                raise ConfigError(f"data.center_crop={size} does not fit inputs "
                                  f"{list(raw.shape)}")
            raw = RawData(center_crop(raw.x_train, size), raw.y_train,
                          center_crop(raw.x_test, size), raw.y_test, raw.num_classes)
        if raw.shape != cfg.shape or raw.num_classes != cfg.num_classes:
            raise ConfigError(
                f"data.source={cfg.source} gives inputs {list(raw.shape)} with "
                f"{raw.num_classes} classes, but the config declares data.shape={list(cfg.shape)} "
                f"and data.num_classes={cfg.num_classes}; fix the data config")
        self._val_count(len(raw.y_train))
        return raw

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # idempotent: fit, validate and test share one corrupted copy
            return
        cfg = self.cfg
        raw, self._raw = (self._raw or self._load()), None
        x_tr, y_tr = raw.x_train, raw.y_train
        val = None
        n_val = self._val_count(len(y_tr))
        if n_val:
            perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(cfg.val_seed))
            val, keep = perm[:n_val], perm[n_val:]
            val = (x_tr[val], y_tr[val])
            x_tr, y_tr = x_tr[keep], y_tr[keep]
        keep = self._train_subset(len(y_tr))
        if keep is not None:
            x_tr, y_tr = x_tr[keep], y_tr[keep]

        n = self.noise
        res = corrupt_dataset(x_tr, y_tr, raw.num_classes, n.name, n.p, n.seed, n.apply_to_test)
        self.record = res.record
        x_test, y_test = raw.x_test, raw.y_test
        if res.test_transform is not None:
            x_test = res.test_transform(x_test)
            if val is not None:
                val = (res.test_transform(val[0]), val[1])

        # statistics of the *clean* training inputs, so the noise level does not shift them
        self.mean, self.std = self._channel_stats(x_tr)
        norm = self._normalize
        if cfg.per_image_whitening:
            norm = per_image_whitening
            # pixel units -> input units (CSR) vary per image here: the clean images' mean std
            std = x_tr.reshape(len(x_tr), -1).std(dim=1, unbiased=False).mean()
            self.std = torch.full_like(self.std, float(std))
        device = self.place or self._target_device(res.x.numel() + x_test.numel())
        rec = res.record
        self.splits["train"] = TensorDictDataset(
            x=norm(res.x).to(device), y=res.y.to(device), y_true=rec.true_labels.to(device),
            corrupted=rec.corrupted.to(device), index=torch.arange(rec.n, device=device))
        if val is not None:
            self.splits["val"] = TensorDictDataset(x=norm(val[0]).to(device), y=val[1].to(device))
        self.splits["test"] = TensorDictDataset(x=norm(x_test).to(device), y=y_test.to(device))
        self.mean, self.std = self.mean.to(device), self.std.to(device)

    def _train_subset(self, n_train: int) -> torch.Tensor | None:
        """``train_size``'s samples of the ``n_train`` left after the hold-out, in their order
        (None: all). Drawn from its own seed, so the same size gives the same subset whatever the
        noise, and a noise seed corrupts the same fraction of any subset."""
        t = self.cfg.train_size
        if t is None:
            return None
        count = round(t * n_train) if t < 1 else int(t)  # as val_size: below 1, a fraction
        if count < 1:
            raise ConfigError(f"data.train_size={shown(t)} keeps no training sample out of "
                              f"{n_train}; use a larger fraction or a count")
        if count > n_train:
            raise ConfigError(f"data.train_size={shown(t)} is more than the {n_train} training "
                              "samples there are; use a count up to that or a fraction")
        if count == n_train:
            return None
        g = torch.Generator().manual_seed(self.cfg.train_seed)
        return torch.randperm(n_train, generator=g)[:count].sort().values

    def _val_count(self, n_train: int) -> int:
        """``val_size``: an integer count, or a fraction of the training split in (0, 1)."""
        v = self.cfg.val_size  # its form is checked by DataConfig; here: against the split
        count = round(v * n_train) if 0 < v < 1 else int(v)
        if v > 0 and count == 0:
            raise ConfigError(f"data.val_size={v} is less than one of the {n_train} training "
                              "samples; use a larger fraction or a count")
        if count >= n_train:
            raise ConfigError(f"data.val_size={v} leaves no training samples out of {n_train}; "
                              "use a count below that or a fraction in (0, 1)")
        return count

    def _channel_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = x.shape[1] if x.dim() >= 3 else 1
        if not self.cfg.normalize:
            return torch.zeros(channels), torch.ones(channels)
        per_channel = x.transpose(0, 1).reshape(channels, -1) if x.dim() >= 3 else x.reshape(1, -1)
        return per_channel.mean(dim=1), per_channel.std(dim=1).clamp_min(1e-8)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2) if x.dim() >= 3 else (1, 1)
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)

    def _target_device(self, n_floats: int) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if not self.cfg.on_device or trainer is None:
            return torch.device("cpu")
        device = trainer.strategy.root_device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if 4 * n_floats > free // 2:
                log.warning("data does not fit in half the free GPU memory; keeping it on the "
                            "CPU (set data.on_device=false to silence this)")
                return torch.device("cpu")
        return device

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self.splits:
            raise RuntimeError("DataModule.setup() has not run")
        ds = self.splits[split]
        bs = self.cfg.batch_size if train else self.cfg.eval_batch_size
        seed = self.cfg.shuffle_seed if train else 0  # evaluation order is sequential anyway
        sampler = EpochBatchSampler(len(ds), bs, shuffle=train, seed=seed)
        return DataLoader(ds, sampler=sampler, batch_size=None, collate_fn=whole_batch)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s, train=False) for s in self.eval_splits]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        trainer = getattr(self, "trainer", None)
        if not (self.augment.enabled and trainer is not None and trainer.training):
            return batch
        x = batch["x"]
        # black (raw pixel 0) in input units; per-image whitening has no single such value
        fill = (torch.zeros_like(self.std) if self.cfg.per_image_whitening
                else -self.mean / self.std).to(x.device, x.dtype)
        gen = self._augment_generator(x.device, trainer.current_epoch)
        return {**batch, "x": augment(x, self.augment, fill, gen)}

    def _augment_generator(self, device: torch.device, epoch: int) -> torch.Generator:
        """One generator per epoch, seeded with (seed, epoch, rank): reproducible, and the same
        after a resume at an epoch boundary."""
        key = (device, epoch)
        if self._aug_gen is None or self._aug_gen[0] != key:
            self._aug_gen = (key, epoch_generator(self.augment.seed, epoch, device))
        return self._aug_gen[1]

    # -- checkpoint --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"corruption_hash": self.record.hash if self.record else None}

    def load_state_dict(self, state: dict) -> None:
        want = state.get("corruption_hash")
        if want and self.record and want != self.record.hash:
            raise ConfigError("the checkpoint was trained on a different corruption (record hash "
                             f"{want[:12]} vs {self.record.hash[:12]}); resume with the same "
                             "data and noise settings")
