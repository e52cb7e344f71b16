"""The data of a stacked job: one DataModule per replica (its own corruption record when its
noise seed differs), tensors shared where they are equal, and batches that hold every
replica's samples at once.

Training batches are ``{"x": [S, B, ...], "y": [S, B], ...}``: replica k's indices come from its
own :class:`EpochBatchSampler` (its ``data.shuffle_seed``), so its batches are those its single
run would draw, in the same order, sharded over DDP ranks the same way. Evaluation runs every
split sequentially (the same indices for all replicas); a tensor the replicas share (the test
images, and the training images unless an input corruption differs) comes as ``[B, ...]``, one
that differs as ``[S, B, ...]``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from memorization.base.errors import ConfigError
from memorization.data.datamodule import DataModule, EpochBatchSampler, whole_batch


class StackedSplit(Dataset):
    """One split of every replica: ``tensors[key]`` is one tensor when the replicas share it,
    else a list of S; indexed with ``[B]`` (evaluation) or ``[S, B]`` (training) indices."""

    def __init__(self, tensors: dict[str, torch.Tensor | list[torch.Tensor]], n: int):
        self.tensors, self.n = tensors, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        first = next(iter(self.tensors.values()))  # all on one device (StackedData.setup)
        i = idx.to((first if isinstance(first, torch.Tensor) else first[0]).device,
                   non_blocking=True)
        out = {}
        for key, v in self.tensors.items():
            if isinstance(v, torch.Tensor):  # [B, ...], or [S, B, ...] for training indices
                out[key] = v.index_select(0, i.reshape(-1)).reshape(*i.shape, *v.shape[1:])
            elif i.dim() == 2:
                out[key] = torch.stack([t.index_select(0, i[k]) for k, t in enumerate(v)])
            else:
                out[key] = torch.stack([t.index_select(0, i) for t in v])
        return out


class StackedSampler(Sampler):
    """The replicas' training samplers side by side: ``[S, B]`` index tensors."""

    def __init__(self, samplers: list[EpochBatchSampler]):
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for s in self.samplers:
            s.set_epoch(epoch)

    def __iter__(self):
        for batches in zip(*self.samplers, strict=True):
            yield torch.stack(batches)

    def __len__(self) -> int:
        return len(self.samplers[0])


class StackedData(L.LightningDataModule):
    """The replicas' DataModules behind one; ``dms[k]`` is replica k's (its ``record``, its
    splits for the epoch-end metrics)."""

    def __init__(self, dms: list[DataModule]):
        super().__init__()
        self.dms = dms
        self.cfg = dms[0].cfg
        self.splits: dict[str, StackedSplit] = {}

    @property
    def record(self):
        """The replicas' corruption record when they share one, else None (each has its own:
        ``dms[k].record``)."""
        records = [dm.record for dm in self.dms]
        first = records[0]
        same = first is not None and all(r is not None and r.hash == first.hash for r in records)
        return first if same else None

    @property
    def eval_splits(self) -> list[str]:
        return self.dms[0].eval_splits

    @property
    def std(self):
        return self.dms[0].std

    def prepare_data(self) -> None:
        self.dms[0].prepare_data()  # the data settings fail here, before any logger starts

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        first = self.dms[0]
        raw = first._raw or first._load()
        for dm in self.dms:
            dm.trainer = self.trainer
            dm._raw = raw  # read once; setup only indexes it
            if dm is not first:  # where replica 0's data went (its device check), all go
                dm.place = first.splits["train"].tensors["x"].device
            dm.setup(stage)
            if dm is not first:
                _share(first, dm)
        for name in first.splits:
            sizes = {len(dm.splits[name]) for dm in self.dms}
            if len(sizes) != 1:
                raise ConfigError(f"the replicas' {name} splits differ in size ({sorted(sizes)}); "
                                  "vary no seed that changes a split's size")
            tensors = {}
            for key, t in first.splits[name].tensors.items():
                each = [dm.splits[name].tensors[key] for dm in self.dms]
                tensors[key] = t if all(e is t for e in each) else each
            self.splits[name] = StackedSplit(tensors, sizes.pop())

    def train_dataloader(self) -> DataLoader:
        samplers = [EpochBatchSampler(self.splits["train"].n, dm.cfg.batch_size, shuffle=True,
                                      seed=dm.cfg.shuffle_seed) for dm in self.dms]
        return DataLoader(self.splits["train"], sampler=StackedSampler(samplers),
                          batch_size=None, collate_fn=whole_batch)

    def _eval(self, split: str) -> DataLoader:
        sampler = EpochBatchSampler(self.splits[split].n, self.cfg.eval_batch_size, shuffle=False)
        return DataLoader(self.splits[split], sampler=sampler, batch_size=None,
                          collate_fn=whole_batch)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._eval(s) for s in self.eval_splits]

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")

    def state_dict(self) -> dict:
        return {"corruption_hashes": [dm.record.hash if dm.record else None for dm in self.dms]}

    def load_state_dict(self, state: dict) -> None:
        for dm, want in zip(self.dms, state.get("corruption_hashes") or [], strict=False):
            dm.load_state_dict({"corruption_hash": want})


def _share(first: DataModule, dm: DataModule) -> None:
    """Point ``dm``'s tensors that equal ``first``'s at ``first``'s (one copy in memory)."""
    for name, split in dm.splits.items():
        mine = first.splits.get(name)
        if mine is None:
            continue
        for key, t in split.tensors.items():
            other = mine.tensors.get(key)
            if other is not None and other.shape == t.shape and torch.equal(other, t):
                split.tensors[key] = other
