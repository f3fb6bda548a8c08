"""A finished phase's last checkpoint -> a Hugging Face layout export (config.json, model.safetensors,
the tokenizer) under ``{run}/phase{k}/export/``, committed by its ``manifest.json`` written last; the
phase's metric log is copied beside it.
"""
from __future__ import annotations

import os
import tempfile

from bert_core import WordPieceTokenizer
from pipelines import storage
from pipelines.pretrain.checkpointing import METRICS_FILE, load_consolidated
from pipelines.pretrain.worker_job import WorkerJob


EXPORT_MANIFEST = "manifest.json"


def weights_uri(directory: str) -> str:
    return storage.join(directory, "model.safetensors")


def export_phase(checkpoint, job: WorkerJob, tokenizer: WordPieceTokenizer, export_uri: str, phase_uri: str) -> None:
    """Consolidated fp32 weights of the last checkpoint -> HF layout: config.json, model.safetensors and
    the tokenizer (``bert_core.checkpoint.TOKENIZER_FILES``: vocab.txt, tokenizer.json with its casing,
    tokenizer_config.json, special_tokens_map.json), so fine-tuning and transformers read its casing."""
    from bert_core import BertForPreTraining, save_pretrained
    from bert_core.checkpoint import TOKENIZER_FILES

    files = ("config.json", "model.safetensors") + TOKENIZER_FILES
    # The longest length trained so far: positions past it hold their initial values.
    trained_length = max(p.max_seq_length for p in job.cfg.phases[:job.phase_index + 1])
    with tempfile.TemporaryDirectory(prefix="pretrain-export-") as tmp:
        ckpt_dir, out_dir = os.path.join(tmp, "checkpoint"), os.path.join(tmp, "export")
        checkpoint.to_directory(ckpt_dir)
        model = BertForPreTraining(job.bert_config())
        load_consolidated(model, ckpt_dir)
        save_pretrained(model, out_dir, tokenizer=tokenizer, model_max_length=trained_length)
        for name in files:
            with open(os.path.join(out_dir, name), "rb") as f:
                storage.write_bytes_atomic(storage.join(export_uri, name), f.read())
        metrics = os.path.join(ckpt_dir, METRICS_FILE)
        if os.path.exists(metrics):
            with open(metrics, "rb") as f:
                storage.write_bytes_atomic(storage.join(phase_uri, METRICS_FILE), f.read())
    storage.write_json_atomic(storage.join(export_uri, EXPORT_MANIFEST),
                              {"files": list(files), "phase": job.phase_index, "steps": job.phase.num_steps,
                               "run_identity": job.run_identity})
