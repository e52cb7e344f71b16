"""The training step never waits for the device: in steady state no step
of a single run or of a stacked job (loop and vmap) calls anything that copies a tensor to the
host. On a CPU nothing waits, so the calls are counted instead: ``.item()``, ``.cpu()``,
``.tolist()``, ``.numpy()`` and ``bool``/``float``/``int`` of a tensor, each of which is a
host sync on a GPU (the counter: benchmarks/syncs.py, which also runs torch's sync debug mode
on a GPU)."""

from __future__ import annotations

import pytest

from benchmarks.syncs import HostSyncCounter as SyncCounter
from memorization.cli.run import train


@pytest.mark.parametrize("stack", [[], ["trainer.replicas=2", "replicas.mode=loop"],
                                   ["trainer.replicas=2", "replicas.mode=vmap"]],
                         ids=["single", "stacked-loop", "stacked-vmap"])
def test_steady_state_steps_make_no_host_sync(make_cfg, stack):
    """The divergence guard is off here: on a CPU it reads each step's loss on purpose (no
    device to wait for); on a GPU it copies the loss without waiting (jobs.DivergenceGuard),
    which tests/e2e/test_gpu.py checks with torch's sync debug mode."""
    SyncCounter.reset()
    cfg = make_cfg("data.batch_size=32", "data.source_options.n_train=512",
                   "trainer.max_epochs=2", "stop_at_train_acc=null", "callbacks=no_checkpoint",
                   "callbacks.divergence=null",
                   "+callbacks.sync._target_=benchmarks.syncs.HostSyncCounter", *stack)
    train(cfg)
    assert SyncCounter.steps == 8  # 2 epochs x steps 2..5: the counter did run
    assert SyncCounter.seen == []


def test_the_counter_sees_a_sync(make_cfg, monkeypatch):
    """The same counter catches an ``.item()`` put into the step (the test can fail)."""
    from memorization.engine.module import Classifier

    step = Classifier.training_step

    def syncing(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        loss.item()
        return loss

    monkeypatch.setattr(Classifier, "training_step", syncing)
    SyncCounter.reset()
    cfg = make_cfg("data.batch_size=32", "data.source_options.n_train=512",
                   "trainer.max_epochs=1", "stop_at_train_acc=null", "callbacks=no_checkpoint",
                   "callbacks.divergence=null",
                   "+callbacks.sync._target_=benchmarks.syncs.HostSyncCounter")
    train(cfg)
    assert SyncCounter.steps == 4 and [n for n, _ in SyncCounter.seen] == ["item"] * 4
