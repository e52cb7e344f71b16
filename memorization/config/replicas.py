"""``trainer.replicas=S`` and the ``replicas`` node: which seeds differ between the replicas of a
stacked job, how they are computed, and what cannot be stacked (checked before training)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf, open_dict

from memorization.base.errors import ConfigError, check_number
from memorization.base.store import register

# the keys a replica may take its own value of: replica k runs with base + k
VARIABLE = ("seed", "noise.seed", "data.shuffle_seed", "data.train_seed", "data.val_seed")
MODES = ("auto", "loop", "vmap")
# optimizers whose step is elementwise given a tensor's gradient: one optimizer over the
# replicas' parameters then steps each replica exactly as its own optimizer would
ELEMENTWISE = {f"torch.optim.{n}" for n in ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
                                            "RMSprop", "Adagrad", "Adadelta", "ASGD")}


@dataclass
class ReplicasConfig:
    """The ``replicas`` node (``trainer.replicas`` says how many).

    ``vary``: the seeds replica k shifts by k (replica 0 keeps the config's). The default,
    ``[seed]``, changes the initial weights and, through ``data.shuffle_seed: ${seed}``, the
    batch order; ``[seed, noise.seed]`` also draws each replica its own corruption.
    ``mode``: ``loop`` runs the replicas' networks one after another inside each step (the
    same kernels as a single run, bit-identical on a CPU, where a single run of these networks
    already keeps the cores busy); ``vmap`` computes them as one batched computation
    (torch.func; fewer, larger kernels, what a GPU needs); ``auto``: vmap on a GPU, else loop.
    """

    vary: list[str] = field(default_factory=lambda: ["seed"])
    mode: str = "auto"

    def __post_init__(self):
        self.vary = list(self.vary)
        bad = [k for k in self.vary if k not in VARIABLE]
        if bad:
            raise ConfigError(f"replicas.vary={self.vary}: {bad[0]} cannot vary between replicas;"
                              f" choose among {', '.join(VARIABLE)}")
        if self.mode not in MODES:
            raise ConfigError(f"replicas.mode={self.mode!r} is not one of {', '.join(MODES)}")


def replica_count(cfg: DictConfig) -> int:
    n = OmegaConf.select(cfg, "trainer.replicas", default=1)
    return int(check_number(n, "trainer.replicas", integer=True, lo=1,
                            what=" (how many seeds one job trains at once)"))


def replicas_config(cfg: DictConfig) -> ReplicasConfig:
    node = cfg.get("replicas")
    return ReplicasConfig(**(OmegaConf.to_container(node, resolve=True) if node else {}))


def replica_cfg(cfg: DictConfig, k: int, vary: list[str]) -> DictConfig:
    """Replica k's config: the single run it stands for (its seeds, trainer.replicas=1).
    Interpolations stay, so ``data.shuffle_seed: ${seed}`` follows the replica's seed."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for key in vary:
            base = OmegaConf.select(cfg, key)
            if base is not None:  # null: a fresh draw per replica anyway
                OmegaConf.update(out, key, int(base) + k, merge=False)
        out.trainer.replicas = 1
    return out


def check_stackable(cfg: DictConfig) -> None:
    """One line for what a stacked job cannot do, before anything is loaded."""
    def refuse(ok: bool, why: str) -> None:
        if not ok:
            raise ConfigError(f"trainer.replicas={cfg.trainer.replicas}: {why}")

    if replica_count(cfg) == 1:
        return

    model = cfg.model
    refuse(not model.get("batchnorm"), "batch norm is not stacked (its running statistics "
           "are per network and per batch); set model.batchnorm=false or trainer.replicas=1")
    for key in ("dropout", "input_dropout", "input_noise"):
        refuse(not model.get(key), f"model.{key}={model.get(key)} draws random numbers in "
               "training that a stacked job cannot draw as each single run would; set it to 0 "
               "or trainer.replicas=1")
    aug = cfg.data.augment
    refuse(not (aug.crop_padding or aug.hflip or aug.rotation), "data.augment is not stacked; "
           "turn it off (crop_padding=0, hflip=false, rotation=0) or use "
           "trainer.replicas=1")
    refuse(not (cfg.module.get("adversarial") or {}).get("weight"),
           "adversarial training (module.adversarial.weight > 0) is not stacked; use "
           "trainer.replicas=1")
    refuse(not (cfg.get("relabel") or {}).get("enabled"),
           "the relabel stage runs on one network; set relabel.enabled=false or "
           "trainer.replicas=1")
    target = str(cfg.optim.get("_target_"))
    refuse(target in ELEMENTWISE, f"optim._target_={target} is not known to step each "
           "parameter elementwise, which one optimizer over all replicas needs; use one of "
           f"{', '.join(sorted(t.rsplit('.', 1)[-1] for t in ELEMENTWISE))}")
    schedule = str((cfg.optim.get("scheduler") or {}).get("_target_") or "")
    refuse("Plateau" not in schedule, "a schedule that watches a metric (ReduceLROnPlateau) "
           "would watch every replica's; use an epoch schedule or trainer.replicas=1")
    refuse(not cfg.trainer.get("gradient_clip_val"), "gradient clipping by norm would take the "
           "norm over all replicas; drop trainer.gradient_clip_val or use trainer.replicas=1")
    refuse(cfg.trainer.get("accumulate_grad_batches", 1) == 1,
           "trainer.accumulate_grad_batches is not stacked; leave it at 1")
    refuse(cfg.trainer.get("check_val_every_n_epoch", 1) == 1,
           "the replicas' stop rules and values come from an evaluation every epoch; leave "
           "trainer.check_val_every_n_epoch at 1")
    rc = replicas_config(cfg)
    refuse(bool(rc.vary), "replicas.vary=[] would train the same run S times; vary at least "
           "the seed (replicas.vary=[seed])")
    idle = {"noise.seed": (cfg.noise.name == "none", "noise=none draws nothing"),
            "data.train_seed": (cfg.data.get("train_size") is None,
                                "data.train_size=null keeps every sample"),
            "data.val_seed": (not cfg.data.get("val_size"), "data.val_size=0 holds none out")}
    for key in rc.vary:
        unused, why = idle.get(key, (False, ""))
        refuse(not unused, f"replicas.vary has {key}, but {why}; drop it")


def check_net(net, replicas: int) -> None:
    """The built network: no buffers (batch norm's running statistics), no dropout module."""
    from torch import nn

    buffers = [name for name, _ in net.named_buffers()]
    if buffers:
        raise ConfigError(f"trainer.replicas={replicas}: the network keeps state outside its "
                          f"weights ({buffers[0]}, batch norm?), which is not stacked; use "
                          "trainer.replicas=1")
    drop = next((n for n, m in net.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)
                 and m.p > 0), None)
    if drop is not None:
        raise ConfigError(f"trainer.replicas={replicas}: dropout ({drop}) draws random numbers "
                          "in training that a stacked job cannot draw as each single run would; "
                          "set its rate to 0 or trainer.replicas=1")


# keys of the trainer node that are ours, not Trainer arguments (memorization/base/accel.py)
OURS = ("replicas", "compile", "matmul_precision")


def trainer_options(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer`` without the keys that are ours (:data:`OURS`)."""
    node = copy.deepcopy(cfg.trainer)
    with open_dict(node):
        for key in OURS:
            node.pop(key, None)
    return node


register("replicas", ReplicasConfig)
