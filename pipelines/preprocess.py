"""Raw text -> NSP instances: the stages chained, each skipped when its output is complete.

    from pipelines.preprocess import PreprocessConfig, run_preprocessing
    uris = run_preprocessing(PreprocessConfig(inputs=("corpus/*.txt.gz",)), "/data/work")
    uris["nsp_pairs"]   # parquet shards of INSTANCES, fed to stages.dynamic_masking at training time

Needs a running Ray (``ray.init()`` or a cluster address); one is started locally if none is.
The DAG of issue 6 calls the same ``run_<stage>`` functions one by one.
"""
from __future__ import annotations

import dataclasses
import logging

from pipelines.stages.clean import CleanConfig, run_clean
from pipelines.stages.nsp_pairs import NspConfig, run_nsp_pairs
from pipelines.stages.wordpiece import Vocabulary
from pipelines.stages.read import ReadConfig, run_read
from pipelines.stages.split import SplitConfig, run_split
from pipelines.stages.tokenize import TokenizeConfig, run_tokenize
from pipelines.stages.wordpiece import WordPieceConfig, run_wordpiece
from pipelines import stage_store

log = logging.getLogger(__name__)
STAGES = ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    inputs: tuple[str, ...] = ("pipelines/demo/corpus/*.txt.gz",)
    """Input URIs, globs or directories."""
    read: ReadConfig = ReadConfig()
    clean: CleanConfig = CleanConfig()
    split: SplitConfig = SplitConfig()
    wordpiece: WordPieceConfig = WordPieceConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    nsp: NspConfig = NspConfig(max_seq_length=128)


def run_preprocessing(cfg: PreprocessConfig, root: str, *, concurrency: int | None = None) -> dict[str, str]:
    """Run (or skip, when complete) every stage under ``root``; -> {stage: output URI}. ``concurrency``
    caps the tasks a stage runs at once (default: as many as the cluster's CPUs); it never changes
    the output."""
    import ray

    if not ray.is_initialized():
        ray.init()
    out: dict[str, str] = {}
    out["read"] = run_read(cfg.read, list(cfg.inputs), root, concurrency=concurrency)
    out["clean"] = run_clean(cfg.clean, out["read"], root, concurrency=concurrency)
    out["split"] = run_split(cfg.split, out["clean"], root, concurrency=concurrency)
    out["wordpiece"] = run_wordpiece(cfg.wordpiece, out["split"], root)
    out["tokenize"] = run_tokenize(cfg.tokenize, out["split"], out["wordpiece"], root, concurrency=concurrency)
    out["nsp_pairs"] = run_nsp_pairs(cfg.nsp, out["tokenize"], root, Vocabulary.of(out["wordpiece"]))
    for stage in STAGES:
        log.info("%s: %s %s", stage, out[stage], stage_store.read_stats(out[stage]))
    return out
