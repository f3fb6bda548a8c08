"""The BERT pipeline's DAG, declared in one place (``bert_pipeline``). Each stage's adapter (the
stage called with its slice of the run config and its upstream outputs, ``pipelines.dag.StageContext``)
is the ``dag_adapter`` at the end of the stage's own module.

DAG (each stage's output under ``{root}/{stage}/{key}/``, the run manifest at ``{root}/manifest.json``):

    read -> clean -> split -> wordpiece -> tokenize -> nsp_pairs -> pretrain -> finetune -> report

``nsp_pairs`` builds one output per distinct ``max_seq_length`` of the pretraining phases, all from
the same tokenized output (outputs ``seq128``, ``seq512``... in the manifest), and ``pretrain`` hands
each phase the instances built for its length: a seq-512 phase trains on 512-token instances.
``data.nsp_pairs.max_seq_length`` is left unset for that reason (set, it must equal every phase's).

Run it with ``bert-pipeline run``, or from Python with ``pipelines.run_config.run_until``.
"""
from __future__ import annotations

import dataclasses
import importlib

from pipelines.run_config import nsp_lengths, run_identity


def _adapter(module: str):
    """``module.dag_adapter``, imported when the stage runs: planning a run, ``status`` and ``submit``
    import neither Ray Train nor torch."""
    return lambda ctx: importlib.import_module(module).dag_adapter(ctx)


def bert_pipeline():
    """The BERT pipeline's stages, in order, each with the config slice its hash covers."""
    from pipelines.dag import Pipeline, Stage

    stages = [
        Stage("read", _adapter("pipelines.stages.read"), config=lambda c: (c.data.inputs, c.data.read),
              description="raw text -> documents"),
        Stage("clean", _adapter("pipelines.stages.clean"), ("read",), lambda c: c.data.clean,
              "normalise, filter, de-duplicate"),
        Stage("split", _adapter("pipelines.stages.split"), ("clean",), lambda c: c.data.split, "documents -> sentences"),
        Stage("wordpiece", _adapter("pipelines.stages.wordpiece"), ("split",), lambda c: c.data.wordpiece,
              "train the vocabulary"),
        Stage("tokenize", _adapter("pipelines.stages.tokenize"), ("split", "wordpiece"),
              lambda c: dataclasses.replace(c.data.tokenize, lowercase=None), "sentences -> ids"),
        Stage("nsp_pairs", _adapter("pipelines.stages.nsp_pairs"), ("tokenize",),
              lambda c: (dataclasses.replace(c.data.nsp_pairs, max_seq_length=None), nsp_lengths(c)),
              "ids -> NSP instances, one output per phase length"),
        Stage("pretrain", _adapter("pipelines.pretrain.trainer"), ("nsp_pairs", "wordpiece"),
              lambda c: run_identity(c)["pretrain"], "DeepSpeed pretraining, all phases, HF export",
              resume_point=lambda root: importlib.import_module("pipelines.pretrain.resume_point").resume_point(root)),
        Stage("finetune", _adapter("pipelines.finetune.jobs"), ("pretrain",), lambda c: run_identity(c)["finetune"],
              "fine-tune every task in parallel"),
        Stage("report", _adapter("pipelines.report"), ("pretrain", "finetune"),
              description="results table and loss curves"),
    ]
    return Pipeline(stages, identity=run_identity)
