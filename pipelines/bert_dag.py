"""The BERT pipeline's DAG, declared in one place: the only module that knows the shape of ``RunConfig``.

Each stage is declared once: its name, its upstream stages, the slice of the run config it depends on,
and its run function. The DAG hashes the slice (without its execution fields: ``identity.identity_data``)
into the stage's identity and hands the same slice to the run function as ``ctx.config``; the run
function calls the stage module with typed values (its own config, upstream URIs, a ``Vocabulary``),
so no stage module reads the run config.

    read -> clean -> near_dedup -> split -> wordpiece -> tokenize -> nsp_pairs | mlm_packs -> pretrain -> finetune
    -> report

Each stage's output is under ``{root}/{stage}/{key}/``, the run manifest at ``{root}/manifest.json``.
``nsp_pairs`` (``pretrain.objective: nsp``, the paper's recipe) or ``mlm_packs`` (``objective: mlm``) builds
one output per distinct ``max_seq_length`` of the pretraining phases, all from the same tokenized output
(outputs ``seq128``, ``seq512``... in the manifest; the other of the two builds none), and ``pretrain``
hands each phase the instances built for its length.

Run it with ``bert-pipeline run``, or from Python with ``run_until`` (what ``run --until`` does):

    cfg = load_run_config("demo", ["root=/tmp/run", "data.inputs=[corpus/*.txt.gz]"])
    run_until(cfg, "nsp_pairs")["nsp_pairs"]["seq64"]   # the data stages alone: NSP instances of length 64

Planning (``bert_pipeline``, ``checked_plan``, ``status``, ``submit``) imports neither Ray nor torch: a
stage's module is imported when the stage runs.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from pipelines import console, stage_store, storage
from pipelines.dag import Pipeline, Stage, StageContext
from pipelines.run_config import RunConfig, nsp_lengths, pack_lengths, run_identity
from pipelines.typed_config import ConfigError


# --- each stage's run function: its slice and upstream outputs -> the stage module's typed call ------
def _read(ctx: StageContext) -> dict[str, str]:
    from pipelines.stages.read import run_read

    inputs, read_cfg = ctx.config
    return {"output": run_read(read_cfg, expand_inputs(inputs), ctx.root)}


def _clean(ctx: StageContext) -> dict[str, str]:
    from pipelines.stages.clean import run_clean

    return {"output": run_clean(ctx.config, ctx.input("read"), ctx.root)}


def _near_dedup(ctx: StageContext) -> dict[str, str]:
    from pipelines.stages.near_dedup import run_near_dedup

    if not ctx.config.enabled:
        console.result("near_dedup", "off (data.near_dedup.enabled: false): split reads clean's output")
    return {"output": run_near_dedup(ctx.config, ctx.input("clean"), ctx.root)}


def _split(ctx: StageContext) -> dict[str, str]:
    from pipelines.stages.split import run_split

    return {"output": run_split(ctx.config, ctx.input("near_dedup"), ctx.root)}


def _wordpiece(ctx: StageContext) -> dict[str, str]:
    from pipelines.stages.wordpiece import run_wordpiece

    out = run_wordpiece(ctx.config, ctx.input("split"), ctx.root)
    return {"output": out, "vocab": storage.join(out, "vocab.txt")}


def _tokenize(ctx: StageContext) -> dict[str, str]:
    from pipelines.stages.tokenize import run_tokenize

    return {"output": run_tokenize(ctx.config, ctx.input("split"), ctx.input("wordpiece"), ctx.root)}


def _nsp_pairs(ctx: StageContext) -> dict[str, str]:
    """One output per pretraining phase length, ``seq{L}``; each is its own stage-store output, so an
    interrupted stage keeps the lengths already committed."""
    from pipelines.stages.nsp_pairs import run_nsp_pairs
    from pipelines.stages.wordpiece import Vocabulary

    nsp_cfg, lengths = ctx.config
    if not lengths:
        console.result("nsp_pairs", "not used: pretrain.objective is mlm (mlm_packs builds its instances)")
        return {}
    vocabulary = Vocabulary.of(ctx.input("wordpiece"))  # a typed value from upstream, not a path to parse
    return {f"seq{length}": run_nsp_pairs(dataclasses.replace(nsp_cfg, max_seq_length=length),
                                          ctx.input("tokenize"), ctx.root, vocabulary)
            for length in lengths}


def _mlm_packs(ctx: StageContext) -> dict[str, str]:
    """One output per pretraining phase length, ``seq{L}``, as ``nsp_pairs``; none with the NSP objective."""
    from pipelines.stages.mlm_packs import run_mlm_packs
    from pipelines.stages.wordpiece import Vocabulary

    pack_cfg, lengths = ctx.config
    if not lengths:
        console.result("mlm_packs", "not used: pretrain.objective is nsp (nsp_pairs builds its instances)")
        return {}
    vocabulary = Vocabulary.of(ctx.input("wordpiece"))
    outputs = {}
    for length in lengths:
        outputs[f"seq{length}"] = out = run_mlm_packs(dataclasses.replace(pack_cfg, max_seq_length=length),
                                                      ctx.input("tokenize"), ctx.root, vocabulary)
        stats = stage_store.read_stats(out)
        console.result("mlm_packs", f"seq {length}: {stats['packs']:,} packs, {stats['full_packs']:,} full, "
                                    f"{100 * (1 - stats['padding_fraction']):.1f}% real tokens")
    return outputs


def _pretrain(ctx: StageContext) -> dict[str, str]:
    """Every phase trains on the instances built for its ``max_seq_length``: NSP pairs (``objective: nsp``)
    or packs (``objective: mlm``)."""
    from pipelines.pretrain.trainer import run_pretraining

    source = "nsp_pairs" if ctx.config.objective == "nsp" else "mlm_packs"
    instances = [ctx.input(source, f"seq{phase.max_seq_length}") for phase in ctx.config.phases]
    return {"output": run_pretraining(ctx.config, instances, ctx.input("wordpiece", "vocab"), ctx.root)}


def _pretrain_resume_point(root: str) -> str | None:
    from pipelines.pretrain.resume_point import resume_point

    return resume_point(root)


def _finetune(ctx: StageContext) -> dict[str, str]:
    """Every task on the pretrained export, under ``{root}/finetune/{stage hash}``; a task that failed
    fails the stage once the others have finished (they are kept: a re-run retries only the failed)."""
    from pipelines.finetune.jobs import run_finetune_jobs

    out_root = storage.join(ctx.root, "finetune", ctx.stage_hash)
    summary = run_finetune_jobs(ctx.config, ctx.input("pretrain"), out_root)
    failed = [name for name, r in summary["tasks"].items() if r.get("status") == "failed"]
    if failed:
        errors = "; ".join(f"{n}: {summary['tasks'][n]['error'].splitlines()[-1]}" for n in failed)
        raise RuntimeError(f"fine-tuning failed for {', '.join(failed)} ({errors}); see {out_root}/results.md")
    return {"output": storage.join(out_root, "results.json"), "table": storage.join(out_root, "results.md")}


def _report(ctx: StageContext) -> dict[str, str]:
    from pipelines.report import write_report

    return write_report(ctx.root, ctx.stage_hash, ctx.inputs)


def bert_pipeline() -> Pipeline:
    """The BERT pipeline's stages, in order, each with the config slice it is hashed by and handed."""
    stage = Stage
    stages = [
        stage("read", _read, (), lambda c: (c.data.inputs, c.data.read), "raw text -> documents"),
        stage("clean", _clean, ("read",), lambda c: c.data.clean, "normalise, filter, exact de-duplication"),
        stage("near_dedup", _near_dedup, ("clean",), lambda c: c.data.near_dedup,
              "near-duplicate documents removed (MinHash LSH)"),
        stage("split", _split, ("near_dedup",), lambda c: c.data.split, "documents -> sentences"),
        stage("wordpiece", _wordpiece, ("split",), lambda c: c.data.wordpiece, "train the vocabulary"),
        # the casing is the vocabulary's: an explicit data.tokenize.lowercase is checked, not identity
        stage("tokenize", _tokenize, ("split", "wordpiece"),
              lambda c: dataclasses.replace(c.data.tokenize, lowercase=None), "sentences -> ids"),
        stage("nsp_pairs", _nsp_pairs, ("tokenize",),
              lambda c: (dataclasses.replace(c.data.nsp_pairs, max_seq_length=None), nsp_lengths(c)),
              "ids -> NSP instances, one output per phase length (objective nsp)"),
        stage("mlm_packs", _mlm_packs, ("tokenize",),
              lambda c: (dataclasses.replace(c.data.mlm_packs, max_seq_length=None), pack_lengths(c)),
              "ids -> full-length packs, one output per phase length (objective mlm)"),
        stage("pretrain", _pretrain, ("nsp_pairs", "mlm_packs", "wordpiece"), lambda c: c.pretrain,
              "DeepSpeed pretraining, all phases, HF export", resume_point=_pretrain_resume_point),
        stage("finetune", _finetune, ("pretrain",), lambda c: c.finetune, "fine-tune every task in parallel"),
        stage("report", _report, ("pretrain", "finetune"), description="results table and loss curves"),
    ]
    return Pipeline(stages, identity=run_identity)


# --- planning and running ----------------------------------------------------------------------------
def expand_inputs(inputs: tuple[str, ...]) -> list[str]:
    """The corpus files of ``data.inputs``, expanded now, so a missing input fails before any Ray work
    (naming the path)."""
    files: list[str] = []
    for uri in inputs:
        try:
            files += storage.expand(uri)
        except FileNotFoundError as e:
            raise ConfigError(f"data.inputs: {e}") from e
    return files


def checked_plan(pipeline: Pipeline, cfg: RunConfig, from_stage: str | None = None, until: str | None = None):
    """``pipeline.plan`` (its refusals happen there), then, when ``read`` is to run, the inputs expanded:
    a bad config or a missing input fails before any work. -> (to run, to skip, manifest)."""
    plan = pipeline.plan(cfg, cfg.root, from_stage, until)
    if "read" in plan[0]:
        expand_inputs(cfg.data.inputs)
    return plan


def run_until(cfg: RunConfig, stage: str, log: Callable[[str], None] | None = None) -> dict[str, dict[str, str]]:
    """The BERT DAG on ``cfg`` up to and including ``stage``, as ``bert-pipeline run --until STAGE`` runs
    it (stages already done are skipped; a bad config or input is refused before any work), on this
    process's Ray (``ray.init`` first, or Ray Data starts a local one). ``log``: as ``Pipeline.run``'s
    (None: the console). -> {stage: its outputs} for ``stage`` and its upstream stages."""
    pipeline = bert_pipeline()
    manifest = pipeline.run(cfg, cfg.root, until=stage, log=log, lease_s=cfg.lock.lease_s,
                            check=lambda to_run: expand_inputs(cfg.data.inputs) if "read" in to_run else None).manifest
    return {name: manifest["stages"][name]["outputs"] for name in pipeline.upstream(stage) + [stage]}

