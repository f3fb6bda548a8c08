"""SQuAD fine-tuning: BertForQuestionAnswering trained on the train windows, evaluated on dev after
each epoch; writes the official ``predictions.json`` (and ``null_odds.json`` for v2.0) and ``metrics.json``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Literal

import numpy as np
import torch

from pipelines import storage
from pipelines.finetune.squad.decode import evaluate_squad
from pipelines.finetune.squad.features import Features, build_features
from pipelines.finetune.squad.params import SquadParams
from pipelines.finetune.squad.read import read_squad


def _features_as_encoded(feats: Features):
    from pipelines.finetune.train import Encoded

    labels = np.stack([np.array(feats.start_positions), np.array(feats.end_positions)], axis=1)
    return Encoded(feats.input_ids, feats.token_type_ids, labels, [str(i) for i in feats.example_index])


def _qa_batch(enc, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    from pipelines.finetune.train import pad_batch

    batch = pad_batch(enc, rows, pad_id)
    labels = batch.pop("labels")
    batch["start_positions"], batch["end_positions"] = labels[:, 0], labels[:, 1]
    return batch


@torch.no_grad()
def predict_logits(model, enc, hp, pad_id: int, device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    model.eval()
    starts, ends = [None] * len(enc.input_ids), [None] * len(enc.input_ids)
    for lo in range(0, len(enc.input_ids), hp.eval_batch_size):
        rows = list(range(lo, min(lo + hp.eval_batch_size, len(enc.input_ids))))
        batch = _qa_batch(enc, rows, pad_id)
        batch.pop("start_positions"), batch.pop("end_positions")
        _, s, e = model(**{k: v.to(device) for k, v in batch.items()})
        for r, i in enumerate(rows):
            n = len(enc.input_ids[i])
            starts[i], ends[i] = s[r, :n].float().cpu().numpy(), e[r, :n].float().cpu().numpy()
    return starts, ends


def finetune_squad(params: SquadParams, data_uri: str, checkpoint_dir: str, hp, output_uri: str | None = None,
                   on_bad_row: Literal["count", "raise"] = "count") -> dict:
    """Fine-tune BertForQuestionAnswering on train, evaluate on dev after each epoch; writes
    ``predictions.json`` (qid -> answer, the official format), ``null_odds.json`` (v2.0), ``metrics.json``."""
    from bert_core import load_pretrained
    from pipelines.finetune.train import check_vocabulary, load_tokenizer, pick_device, train_epochs

    train_uri = storage.join(data_uri, params.train_file or f"train-{params.version}.json")
    dev_uri = storage.join(data_uri, params.dev_file or f"dev-{params.version}.json")
    train_ex, train_rep = read_squad(train_uri, on_bad_row, params.version)
    dev_ex, dev_rep = read_squad(dev_uri, on_bad_row, params.version)
    if hp.max_train_examples:
        train_ex = train_ex[:hp.max_train_examples]
    if hp.max_eval_examples:
        dev_ex = dev_ex[:hp.max_eval_examples]
    device, tok = pick_device(), load_tokenizer(checkpoint_dir)
    train_enc = _features_as_encoded(build_features(train_ex, tok, params, hp.max_seq_length, training=True))
    dev_feats = build_features(dev_ex, tok, params, hp.max_seq_length, training=False)
    dev_enc = _features_as_encoded(dev_feats)
    torch.manual_seed(hp.seed)
    model = load_pretrained(checkpoint_dir, "question_answering").to(device)
    check_vocabulary(tok, model, checkpoint_dir)
    history, final = [], {}

    def evaluate(epoch: int, train_loss: float, seconds: float, cpu_seconds: float) -> None:
        s, e = predict_logits(model, dev_enc, hp, tok.pad_id, device)
        final["metrics"], final["texts"], final["odds"] = evaluate_squad(dev_ex, dev_feats, s, e, params)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_seconds": seconds, "dev": final["metrics"]})

    name = f"squad_{params.version}"
    train_epochs(model, len(train_enc.input_ids), lambda rows: _qa_batch(train_enc, rows, tok.pad_id), hp, device,
                 evaluate, label=name)
    result = {"task": name, "hyper_params": asdict(hp), "squad_params": asdict(params),
              "num_train_features": len(train_enc.input_ids), "dev": {name: final["metrics"]},
              "score": final["metrics"]["f1"], "epochs": history,
              "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in history])),
              "data_reports": [train_rep.to_dict(), dev_rep.to_dict()], "device": str(device)}
    if output_uri is not None:
        storage.write_json_atomic(storage.join(output_uri, "predictions.json"), final["texts"])
        if params.version == "v2.0":
            storage.write_json_atomic(storage.join(output_uri, "null_odds.json"), final["odds"])
        storage.write_json_atomic(storage.join(output_uri, "metrics.json"), result)
    return result
