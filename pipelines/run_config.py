"""RunConfig: one typed, strict config for a whole run, composed of every stage's own config (the
schema). Loading it from a preset or YAML file: ``pipelines.presets``; the DAG it drives, and which slice
of it each stage gets: ``pipelines.bert_dag``.

Paths starting with ``demo:`` name files shipped in ``pipelines/demo/`` (the demo corpus and task); storage
opens them where the package is installed, and stage identities hold the ``demo:`` name. Relative local
paths (the root, the corpus, the fine-tuning folders) are made absolute when the config is built, against
the directory the command was typed in: a config means the same files wherever it is then run or sent.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage
from pipelines.finetune.config import FinetuneConfig
from pipelines.identity import PRETRAIN_EXECUTION_FIELDS  # one list for the DAG and pretraining
from pipelines.pretrain.config import PretrainConfig
from pipelines.stages.clean import CleanConfig
from pipelines.stages.mlm_packs import PackConfig
from pipelines.stages.near_dedup import NearDedupConfig
from pipelines.stages.nsp_pairs import NspConfig
from pipelines.stages.read import ReadConfig
from pipelines.stages.split import SplitConfig
from pipelines.stages.tokenize import TokenizeConfig
from pipelines.stages.wordpiece import WordPieceConfig
from pipelines.typed_config import ConfigError, to_dict



@dataclass(frozen=True)
class DataConfig:
    """Raw text to pretraining instances: the corpus and the config of every Data stage."""

    inputs: tuple[str, ...] = ("demo:corpus",)
    """Corpus files, directories or glob patterns (any storage URI; ``demo:`` = shipped with the package)."""
    read: ReadConfig = field(default_factory=ReadConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    wordpiece: WordPieceConfig = field(default_factory=WordPieceConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    nsp_pairs: NspConfig = field(default_factory=NspConfig)
    """NSP pairs, for ``pretrain.objective: nsp`` (the paper's recipe)."""
    mlm_packs: PackConfig = field(default_factory=PackConfig)
    """Full-length packs, for ``pretrain.objective: mlm``."""


@dataclass(frozen=True)
class RayConfig:
    """Where the stages run. Not part of the run's identity: a run may move between machines."""

    address: str | None = None
    """None: start a local Ray (or use RAY_ADDRESS when set); 'auto' or host:port: join a cluster."""
    num_cpus: int | None = None
    """CPUs of a local Ray (None: all of this machine's)."""


@dataclass(frozen=True)
class LockConfig:
    """The run root's one-driver lock (``pipelines.run_lock``). Not part of the run's identity."""

    lease_s: float = 120.0
    """Seconds a driver's lock lasts unless renewed (renewed every lease_s / 3 while the run lives). A
    driver that dies without releasing it is replaced after this long, or at once on its own host."""

    def __post_init__(self) -> None:
        if not self.lease_s > 0:
            raise ConfigError(f"lock.lease_s: must be > 0 seconds, got {self.lease_s!r}")


@dataclass(frozen=True)
class RunConfig:
    name: str = "demo"
    """A label for people; shown in status and reports."""
    root: str = "runs/demo"
    """Run root (local path or s3://): stage outputs, checkpoints, the manifest and the report."""
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    lock: LockConfig = field(default_factory=LockConfig)

    def __post_init__(self) -> None:
        if not self.root:
            raise ConfigError("root: the run root must be set")
        _set_absolute_paths(self)
        if not self.data.inputs:
            raise ConfigError("data.inputs: at least one corpus path is needed")
        for name in ("nsp_pairs", "mlm_packs"):
            fixed = getattr(self.data, name).max_seq_length
            if fixed is not None and phase_lengths(self) != (fixed,):
                raise ConfigError(f"data.{name}.max_seq_length {fixed} differs from the pretraining phases' "
                                  f"max_seq_length {list(phase_lengths(self))}: instances are built for each phase's "
                                  "length; leave it unset")
        casing = self.data.tokenize.lowercase
        if casing is not None and casing != self.data.wordpiece.lowercase:
            raise ConfigError(f"data.tokenize.lowercase {casing} contradicts data.wordpiece.lowercase "
                              f"{self.data.wordpiece.lowercase}: tokenizing uses the vocabulary's casing; set "
                              "data.wordpiece.lowercase (and leave data.tokenize.lowercase unset or equal)")


def _set_absolute_paths(cfg: RunConfig) -> None:
    """Relative local paths made absolute, once, where the config is built (``storage.absolute``)."""
    ft = cfg.finetune
    tasks = tuple(dataclasses.replace(t, data_uri=storage.absolute(t.data_uri)) if t.data_uri else t
                  for t in ft.tasks)
    roots = {k: storage.absolute(getattr(ft, k)) for k in ("glue_root", "squad_root", "conll_root", "swag_root", "commonsenseqa_root", "copa_root") if getattr(ft, k)}
    object.__setattr__(cfg, "root", storage.absolute(cfg.root))
    object.__setattr__(cfg, "data", dataclasses.replace(cfg.data, inputs=tuple(storage.absolute(u) for u in cfg.data.inputs)))
    object.__setattr__(cfg, "finetune", dataclasses.replace(ft, tasks=tasks, **roots))


def phase_lengths(cfg: RunConfig) -> tuple[int, ...]:
    """The distinct phase lengths, in increasing order."""
    return tuple(sorted({phase.max_seq_length for phase in cfg.pretrain.phases}))


def nsp_lengths(cfg: RunConfig) -> tuple[int, ...]:
    """The lengths ``nsp_pairs`` builds an output for: every phase's with the NSP objective, else none."""
    return phase_lengths(cfg) if cfg.pretrain.objective == "nsp" else ()


def pack_lengths(cfg: RunConfig) -> tuple[int, ...]:
    """The lengths ``mlm_packs`` builds an output for: every phase's with the MLM-only objective, else none."""
    return phase_lengths(cfg) if cfg.pretrain.objective == "mlm" else ()


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """What makes two configs the same run: everything except names, locations and resources."""
    pretrain = {k: v for k, v in to_dict(cfg.pretrain).items() if k not in PRETRAIN_EXECUTION_FIELDS}
    tasks = [{k: v for k, v in t.items() if k not in ("num_cpus", "num_gpus")}
             for t in to_dict(cfg.finetune)["tasks"]]
    return {"data": to_dict(cfg.data), "pretrain": pretrain, "finetune": {**to_dict(cfg.finetune), "tasks": tasks}}
