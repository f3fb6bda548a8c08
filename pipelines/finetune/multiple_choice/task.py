"""Multiple-choice fine-tuning: ``BertForMultipleChoice`` trained with ``train.py``'s loop (optimizer,
schedule, clipping, per-batch padding), dev accuracy after each epoch; writes ``dev_predictions/{task}.tsv``
and ``metrics.json``.

    from pipelines.finetune.multiple_choice import MC_TASKS, finetune_multiple_choice
    result = finetune_multiple_choice(MC_TASKS["copa"], "../shared/data/superglue/COPA", checkpoint_dir, hp, out)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from bert_core import WordPieceTokenizer
from bert_core.checkpoint import load_hf_state_dict, read_hf_config, read_hf_weights
from bert_core.model import BertForMultipleChoice
from pipelines import storage
from pipelines.finetune import metrics, train
from pipelines.finetune.multiple_choice.read import ChoiceExample, read_choice_data
from pipelines.finetune.multiple_choice.spec import ChoiceSpec
from pipelines.finetune.train import Encoded, HyperParams


@dataclass
class ChoiceEncoded:
    """``pairs`` holds num_choices consecutive rows per question: ``[CLS] context [SEP] choice [SEP]``."""

    pairs: Encoded
    labels: np.ndarray
    ids: list[str]
    num_choices: int


def encode_choices(tok: WordPieceTokenizer, examples: Sequence[ChoiceExample], num_choices: int,
                   max_seq_length: int) -> ChoiceEncoded:
    """Every (context, choice) pair, truncated longest-first to ``max_seq_length``."""
    encoded = tok.encode_truncated([(ex.context, c) for ex in examples for c in ex.choices], max_seq_length)
    pairs = Encoded([i for i, _ in encoded], [t for _, t in encoded], None, [])
    return ChoiceEncoded(pairs, np.array([ex.label for ex in examples], dtype=np.int64), [ex.guid for ex in examples],
                         num_choices)


def choice_batch(enc: ChoiceEncoded, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """(B, C, T) input_ids / token_type_ids / attention_mask, padded to the batch's longest pair; (B,) labels."""
    C = enc.num_choices
    flat = train.pad_batch(enc.pairs, [r * C + c for r in rows for c in range(C)], pad_id)
    batch = {k: v.view(len(rows), C, -1) for k, v in flat.items()}
    batch["labels"] = torch.from_numpy(enc.labels[list(rows)])
    return batch


@torch.no_grad()
def predict_choices(model: nn.Module, enc: ChoiceEncoded, hp: HyperParams, pad_id: int,
                    device: torch.device) -> np.ndarray:
    """Logits (N, C) in row order; questions sorted by their longest pair so batches pad little."""
    model.eval()
    C = enc.num_choices
    order = sorted(range(len(enc.ids)), key=lambda i: max(len(enc.pairs.input_ids[i * C + c]) for c in range(C)))
    out = np.zeros((len(order), C), dtype=np.float32)
    per_batch = max(1, hp.eval_batch_size // C)
    for start in range(0, len(order), per_batch):
        rows = order[start:start + per_batch]
        batch = choice_batch(enc, rows, pad_id)
        batch.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=hp.precision == "bf16"):
            logits = model(**{k: v.to(device) for k, v in batch.items()})[1]
        out[rows] = logits.float().cpu().numpy()
    return out


def multiple_choice_model(checkpoint_dir: str) -> BertForMultipleChoice:
    """The checkpoint's encoder and pooler under a fresh choice-scoring vector (or the checkpoint's own)."""
    model = BertForMultipleChoice(read_hf_config(checkpoint_dir))
    load_hf_state_dict(model, read_hf_weights(checkpoint_dir))
    return model


def finetune_multiple_choice(spec: ChoiceSpec, data_uri: str, checkpoint_dir: str, hp: HyperParams,
                             output_uri: str | None = None, on_bad_row: Literal["count", "raise"] = "count") -> dict:
    """Fine-tune on the train file, score dev accuracy after each epoch; writes ``dev_predictions/{task}.tsv``
    (id, predicted choice, label) and ``metrics.json`` under ``output_uri``; returns the metrics."""
    train_rows, dev_rows, reports = read_choice_data(spec, data_uri, on_bad_row)
    train_rows = train_rows[:hp.max_train_examples or None]
    dev_rows = dev_rows[:hp.max_eval_examples or None]
    device, tok = train.pick_device(), train.load_tokenizer(checkpoint_dir)
    train_enc = encode_choices(tok, train_rows, spec.num_choices, hp.max_seq_length)
    dev_enc = encode_choices(tok, dev_rows, spec.num_choices, hp.max_seq_length)
    torch.manual_seed(hp.seed)  # the fresh head's initialisation and dropout
    model = multiple_choice_model(checkpoint_dir).to(device)
    train.check_vocabulary(tok, model, checkpoint_dir)
    history: list[dict] = []
    final: dict = {}

    def evaluate(epoch: int, train_loss: float, seconds: float, cpu_seconds: float) -> None:
        final["pred"] = predict_choices(model, dev_enc, hp, tok.pad_id, device).argmax(-1)
        final["dev"] = {"accuracy": metrics.accuracy(final["pred"], dev_enc.labels)}
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_seconds": seconds,
                        "epoch_cpu_seconds": cpu_seconds, "dev": {spec.name: final["dev"]}})

    train.train_epochs(model, len(train_rows), lambda rows: choice_batch(train_enc, rows, tok.pad_id), hp, device,
                       evaluate, label=spec.name)
    result = {
        "task": spec.name, "kind": "multiple_choice", "hyper_params": asdict(hp), "choice_spec": asdict(spec),
        "num_train_examples": len(train_rows), "dev": {spec.name: final["dev"]},
        "score": 100 * final["dev"]["accuracy"], "epochs": history,
        "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in history])),
        "data_reports": reports, "device": str(device),
    }
    if output_uri is not None:
        lines = ["id\tprediction\tlabel"] + [f"{i}\t{p}\t{y}" for i, p, y in zip(dev_enc.ids, final["pred"],
                                                                                  dev_enc.labels)]
        storage.write_bytes_atomic(storage.join(output_uri, "dev_predictions", f"{spec.name}.tsv"),
                                   ("\n".join(lines) + "\n").encode("utf-8"))
        storage.write_json_atomic(storage.join(output_uri, "metrics.json"), result)
    return result
