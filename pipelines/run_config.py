"""RunConfig: one typed, strict config for a whole run, composed of every stage's own config, and
the BERT pipeline's DAG of stages, declared here in one place.

    cfg = load_run_config("demo")                                  # a preset name
    cfg = load_run_config("my.yaml", ["pretrain.phases.0.num_steps=50", "root=s3://b/runs/x"])

Presets live in ``pipelines/presets/{demo,base,large}.yaml``. A config file may start from a preset
with ``preset: NAME`` and override any key. Paths starting with ``demo:`` name files shipped in
``pipelines/demo/`` (the demo corpus and task), resolved where the package is installed.

DAG (each stage's output under ``{root}/{stage}/{key}/``, the run manifest at ``{root}/manifest.json``):

    read -> clean -> split -> wordpiece -> tokenize -> nsp_pairs -> pretrain -> finetune -> report

``nsp_pairs`` builds one output per distinct ``max_seq_length`` of the pretraining phases, all from
the same tokenized output (outputs ``seq128``, ``seq512``... in the manifest), and ``pretrain`` hands
each phase the instances built for its length: a seq-512 phase trains on 512-token instances.
``data.nsp_pairs.max_seq_length`` is left unset for that reason (set, it must equal every phase's).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage
from pipelines.finetune.jobs import FinetuneConfig
from pipelines.pretrain.config import PretrainConfig
from pipelines.stages.clean import CleanConfig
from pipelines.stages.nsp_pairs import NspConfig
from pipelines.stages.read import ReadConfig
from pipelines.stages.split import SplitConfig
from pipelines.stages.tokenize import TokenizeConfig
from pipelines.stages.wordpiece import WordPieceConfig
from pipelines.typed_config import ConfigError, apply_overrides, from_dict, load_yaml_text, merge, to_dict

PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
PRESETS = ("demo", "base", "large")

@dataclass(frozen=True)
class DataConfig:
    """Raw text to NSP instances: the corpus and the config of every Data stage."""

    inputs: tuple[str, ...] = ("demo:corpus",)
    """Corpus files, directories or glob patterns (any storage URI; ``demo:`` = shipped with the package)."""
    read: ReadConfig = field(default_factory=ReadConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    wordpiece: WordPieceConfig = field(default_factory=WordPieceConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    nsp_pairs: NspConfig = field(default_factory=NspConfig)


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
        if not self.data.inputs:
            raise ConfigError("data.inputs: at least one corpus path is needed")
        fixed = self.data.nsp_pairs.max_seq_length
        if fixed is not None and nsp_lengths(self) != (fixed,):
            raise ConfigError(f"data.nsp_pairs.max_seq_length {fixed} differs from the pretraining phases' "
                              f"max_seq_length {list(nsp_lengths(self))}: instances are built for each phase's length; leave it unset")
        casing = self.data.tokenize.lowercase
        if casing is not None and casing != self.data.wordpiece.lowercase:
            raise ConfigError(f"data.tokenize.lowercase {casing} contradicts data.wordpiece.lowercase "
                              f"{self.data.wordpiece.lowercase}: tokenizing uses the vocabulary's casing; set "
                              "data.wordpiece.lowercase (and leave data.tokenize.lowercase unset or equal)")


def nsp_lengths(cfg: RunConfig) -> tuple[int, ...]:
    """The distinct phase lengths, in increasing order: one NSP output is built for each."""
    return tuple(sorted({phase.max_seq_length for phase in cfg.pretrain.phases}))


# Fields that change how a run executes, not what it computes (see pipelines.pretrain.config).
PRETRAIN_EXECUTION_FIELDS = ("num_workers", "use_gpu", "cpus_per_worker", "max_failures", "metrics_every",
                             "storage_path", "materialize_instances")


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """What makes two configs the same run: everything except names, locations and resources."""
    pretrain = {k: v for k, v in to_dict(cfg.pretrain).items() if k not in PRETRAIN_EXECUTION_FIELDS}
    tasks = [{k: v for k, v in t.items() if k not in ("num_cpus", "num_gpus")}
             for t in to_dict(cfg.finetune)["tasks"]]
    return {"data": to_dict(cfg.data), "pretrain": pretrain, "finetune": {**to_dict(cfg.finetune), "tasks": tasks}}


def resolve_path(uri: str) -> str:
    """``demo:corpus`` -> the installed ``pipelines/demo/corpus``; other URIs unchanged."""
    if uri.startswith("demo:"):
        return os.path.join(DEMO_DIR, uri[len("demo:"):].lstrip("/"))
    return uri


# --- loading ------------------------------------------------------------------------------------
def preset_data(name: str) -> dict[str, Any]:
    path = os.path.join(PRESETS_DIR, f"{name}.yaml")
    if not os.path.exists(path):
        raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    with open(path) as f:
        return _expand_preset(load_yaml_text(f.read(), path), path)


def _expand_preset(data: dict[str, Any], source: str) -> dict[str, Any]:
    base = data.pop("preset", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{source}: preset must be a preset name, got {base!r}")
    return merge(preset_data(base), data)


def config_data(config: str | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Plain data of a config: a preset name or a YAML file (that may name a preset), then overrides."""
    if config is None:
        data: dict[str, Any] = {}
    elif config in PRESETS:
        data = preset_data(config)
    else:
        try:
            text = storage.read_bytes(config).decode("utf-8")
        except FileNotFoundError as e:
            raise ConfigError(f"config {config!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file") from e
        data = _expand_preset(load_yaml_text(text, config), config)
    return apply_overrides(data, overrides)


def build_run_config(data: dict[str, Any]) -> RunConfig:
    """Strict: an unknown key or a wrong type raises ConfigError naming it; stage configs' own
    checks (ValueError) are reported as ConfigError too."""
    try:
        return from_dict(RunConfig, data)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e


def load_run_config(config: str | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return build_run_config(config_data(config, overrides))


def with_root(cfg: RunConfig, root: str) -> RunConfig:
    return dataclasses.replace(cfg, root=root)


# --- the DAG ------------------------------------------------------------------------------------
def check_inputs(cfg: RunConfig) -> list[str]:
    """Expand the corpus paths now, so a missing input fails before any Ray work (naming the path)."""
    files: list[str] = []
    for uri in cfg.data.inputs:
        try:
            files += storage.expand(resolve_path(uri))
        except FileNotFoundError as e:
            raise ConfigError(f"data.inputs: {e}") from e
    return files


def _read(ctx) -> dict[str, str]:
    from pipelines.stages.read import run_read

    return {"output": run_read(ctx.cfg.data.read, check_inputs(ctx.cfg), ctx.root)}


def _clean(ctx) -> dict[str, str]:
    from pipelines.stages.clean import run_clean

    return {"output": run_clean(ctx.cfg.data.clean, ctx.input("read"), ctx.root)}


def _split(ctx) -> dict[str, str]:
    from pipelines.stages.split import run_split

    return {"output": run_split(ctx.cfg.data.split, ctx.input("clean"), ctx.root)}


def _wordpiece(ctx) -> dict[str, str]:
    from pipelines.stages.wordpiece import run_wordpiece

    out = run_wordpiece(ctx.cfg.data.wordpiece, ctx.input("split"), ctx.root)
    return {"output": out, "vocab": storage.join(out, "vocab.txt")}


def _tokenize(ctx) -> dict[str, str]:
    from pipelines.stages.tokenize import run_tokenize

    return {"output": run_tokenize(ctx.cfg.data.tokenize, ctx.input("split"), ctx.input("wordpiece"), ctx.root)}


def _nsp_pairs(ctx) -> dict[str, str]:
    """One output per phase length, ``seq{L}``; each is its own stage-store output (keyed by its
    config), so an interrupted stage keeps the lengths already committed."""
    from pipelines.stages.nsp_pairs import run_nsp_pairs

    return {f"seq{length}": run_nsp_pairs(dataclasses.replace(ctx.cfg.data.nsp_pairs, max_seq_length=length),
                                          ctx.input("tokenize"), ctx.root)
            for length in nsp_lengths(ctx.cfg)}


def _pretrain(ctx) -> dict[str, str]:
    from pipelines.pretrain.trainer import run_pretraining

    instances = [ctx.input("nsp_pairs", f"seq{phase.max_seq_length}") for phase in ctx.cfg.pretrain.phases]
    export = run_pretraining(ctx.cfg.pretrain, instances, ctx.input("wordpiece", "vocab"), ctx.root)
    return {"output": export}


def _finetune(ctx) -> dict[str, str]:
    from pipelines.finetune.jobs import run_finetune_jobs

    out_root = storage.join(ctx.root, "finetune", ctx.stage_hash)
    tasks = tuple(dataclasses.replace(t, data_uri=resolve_path(t.data_uri)) for t in ctx.cfg.finetune.tasks)
    finetune = dataclasses.replace(ctx.cfg.finetune, tasks=tasks, glue_root=resolve_path(ctx.cfg.finetune.glue_root),
                                   squad_root=resolve_path(ctx.cfg.finetune.squad_root))
    summary = run_finetune_jobs(finetune, ctx.input("pretrain"), out_root)
    failed = [name for name, r in summary["tasks"].items() if r.get("status") == "failed"]
    if failed:  # the others finished and are kept; a re-run retries only these
        errors = "; ".join(f"{n}: {summary['tasks'][n]['error'].splitlines()[-1]}" for n in failed)
        raise RuntimeError(f"fine-tuning failed for {', '.join(failed)} ({errors}); see {out_root}/results.md")
    return {"output": storage.join(out_root, "results.json"), "table": storage.join(out_root, "results.md")}


def _report(ctx) -> dict[str, str]:
    from pipelines import report

    return report.write_report(ctx.root, ctx.stage_hash, ctx.inputs)


def bert_pipeline():
    """The BERT pipeline's stages, in order, each with the config slice its hash covers."""
    from pipelines.dag import Pipeline, Stage

    stages = [
        Stage("read", _read, config=lambda c: (c.data.inputs, c.data.read), description="raw text -> documents"),
        Stage("clean", _clean, ("read",), lambda c: c.data.clean, "normalise, filter, de-duplicate"),
        Stage("split", _split, ("clean",), lambda c: c.data.split, "documents -> sentences"),
        Stage("wordpiece", _wordpiece, ("split",), lambda c: c.data.wordpiece, "train the vocabulary"),
        Stage("tokenize", _tokenize, ("split", "wordpiece"),
              lambda c: dataclasses.replace(c.data.tokenize, lowercase=None), "sentences -> ids"),
        Stage("nsp_pairs", _nsp_pairs, ("tokenize",),
              lambda c: (dataclasses.replace(c.data.nsp_pairs, max_seq_length=None), nsp_lengths(c)),
              "ids -> NSP instances, one output per phase length"),
        Stage("pretrain", _pretrain, ("nsp_pairs", "wordpiece"), lambda c: run_identity(c)["pretrain"],
              "DeepSpeed pretraining, all phases, HF export"),
        Stage("finetune", _finetune, ("pretrain",), lambda c: run_identity(c)["finetune"],
              "fine-tune every task in parallel"),
        Stage("report", _report, ("pretrain", "finetune"), description="results table and loss curves"),
    ]
    return Pipeline(stages, identity=run_identity)
