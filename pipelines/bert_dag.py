"""The BERT pipeline's DAG, declared in one place (``bert_pipeline``), and the adapters that call each
stage with its slice of the run config and its upstream outputs (``pipelines.dag.StageContext``).

DAG (each stage's output under ``{root}/{stage}/{key}/``, the run manifest at ``{root}/manifest.json``):

    read -> clean -> split -> wordpiece -> tokenize -> nsp_pairs -> pretrain -> finetune -> report

``nsp_pairs`` builds one output per distinct ``max_seq_length`` of the pretraining phases, all from
the same tokenized output (outputs ``seq128``, ``seq512``... in the manifest), and ``pretrain`` hands
each phase the instances built for its length: a seq-512 phase trains on 512-token instances.
``data.nsp_pairs.max_seq_length`` is left unset for that reason (set, it must equal every phase's).
"""
from __future__ import annotations

import dataclasses

from pipelines import storage
from pipelines.run_config import RunConfig, nsp_lengths, resolve_path, run_identity
from pipelines.typed_config import ConfigError


# --- adapters: each stage called with its config slice and its upstream outputs ---------------------
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
    from pipelines.stages.wordpiece import Vocabulary

    vocabulary = Vocabulary.of(ctx.input("wordpiece"))  # a typed value from upstream, not a path to parse
    return {f"seq{length}": run_nsp_pairs(dataclasses.replace(ctx.cfg.data.nsp_pairs, max_seq_length=length),
                                          ctx.input("tokenize"), ctx.root, vocabulary)
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
