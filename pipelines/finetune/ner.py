"""Fine-tune token classification (CoNLL-2003 NER, slot filling) from an HF-layout BERT checkpoint.

    from pipelines.finetune.conll import ConllParams
    from pipelines.finetune.ner import finetune_ner
    result = finetune_ner(ConllParams(scheme="iob2"), "shared/data/conll2003/iob2", checkpoint_dir, hp, out_uri)

The words are given (pre-split), so each sentence is encoded word by word (``is_pretokenized``): a word
becomes one or more WordPieces and carries its label on the first one; the others, [CLS] and [SEP] get
the ignore index, so they count neither in the loss nor in scoring, and a word is predicted by the
argmax at its first piece (the BERT paper's recipe, and Hugging Face's ``run_ner``). A sentence longer
than ``max_seq_length - 2`` pieces is cut: its words past the cut are predicted ``O`` and scored against
their gold tags (never dropped from scoring), and their count is reported; so is the count of words
that give no piece at all (only control characters), also predicted ``O``.

Training reuses ``train.py``'s loop, optimizer, schedule and per-batch padding. After each epoch the dev
file is scored as conlleval does (``metrics.conll_scores``); ``dev_predictions/{task}.txt`` is the last
epoch's ``word gold predicted`` file that conlleval.pl reads, ``metrics.json`` the result.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from bert_core import WordPieceTokenizer, load_pretrained
from bert_core.model import IGNORE_INDEX
from pipelines import storage
from pipelines.finetune import conll, metrics, train
from pipelines.finetune.train import Encoded, HyperParams


@dataclass
class TokenEncoded:
    """One split's rows: piece ids, per-piece labels (-100 off first pieces) and where each word starts."""

    rows: Encoded
    """input_ids / token_type_ids per row (``labels`` unused: they are ragged, kept below)."""
    piece_labels: list[list[int]]
    first_piece: list[list[int]]
    """Per sentence, the row position of each word's first piece, -1 when it has none (cut or empty)."""
    num_truncated_words: int
    num_empty_words: int


def encode_sentences(tok: WordPieceTokenizer, sentences: Sequence[conll.Sentence], label_names: Sequence[str],
                     max_seq_length: int) -> TokenEncoded:
    """``[CLS] pieces [SEP]`` per sentence, cut to ``max_seq_length``, labels on first pieces."""
    label_id = {name: i for i, name in enumerate(label_names)}
    encodings = tok.tokenizer.encode_batch([list(s.words) for s in sentences], is_pretokenized=True,
                                           add_special_tokens=False)
    ids, labels, firsts = [], [], []
    truncated = empty = 0
    for s, enc in zip(sentences, encodings):
        keep = min(len(enc.ids), max_seq_length - 2)
        first = [-1] * len(s.words)
        row_labels = [IGNORE_INDEX] * (keep + 2)
        for piece, word in enumerate(enc.word_ids[:keep]):
            if first[word] == -1:
                first[word] = piece + 1  # +1: after [CLS]
                row_labels[piece + 1] = label_id[s.tags[word]]
        with_pieces = set(enc.word_ids)
        empty += sum(w not in with_pieces for w in range(len(s.words)))
        truncated += sum(first[w] == -1 and w in with_pieces for w in range(len(s.words)))
        ids.append([tok.cls_id] + enc.ids[:keep] + [tok.sep_id])
        labels.append(row_labels)
        firsts.append(first)
    rows = Encoded(ids, [[0] * len(r) for r in ids], None, [str(s.line) for s in sentences])
    return TokenEncoded(rows, labels, firsts, truncated, empty)


def token_batch(enc: TokenEncoded, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """``train.pad_batch`` plus (B, T) labels, padding labelled -100."""
    batch = train.pad_batch(enc.rows, rows, pad_id)
    labels = torch.full(batch["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
    for r, i in enumerate(rows):
        labels[r, :len(enc.piece_labels[i])] = torch.tensor(enc.piece_labels[i])
    batch["labels"] = labels
    return batch


@torch.no_grad()
def predict_tags(model: nn.Module, enc: TokenEncoded, label_names: Sequence[str], hp: HyperParams, pad_id: int,
                 device: torch.device) -> list[list[str]]:
    """Per sentence, each word's tag: the argmax at its first piece, ``O`` for a word without one."""
    model.eval()
    order = sorted(range(len(enc.first_piece)), key=lambda i: len(enc.rows.input_ids[i]))
    out: list[list[str]] = [[] for _ in order]
    for start in range(0, len(order), hp.eval_batch_size):
        rows = order[start:start + hp.eval_batch_size]
        batch = train.pad_batch(enc.rows, rows, pad_id)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=hp.precision == "bf16"):
            logits = model(**{k: v.to(device) for k, v in batch.items()})[1]
        best = logits.argmax(-1).cpu().numpy()  # (B, T)
        for r, i in enumerate(rows):
            out[i] = [label_names[best[r, p]] if p >= 0 else "O" for p in enc.first_piece[i]]
    return out


def entity_metrics(sentences: Sequence[conll.Sentence], predicted: list[list[str]], enc: TokenEncoded,
                   ) -> tuple[dict, dict]:
    """The results row's metrics (entity P/R/F1, fractions) and the per-type breakdown with the counts of
    words predicted O for want of a piece (cut at max_seq_length, or empty)."""
    s = metrics.conll_scores([x.tags for x in sentences], predicted)
    return ({"entity_precision": s["precision"], "entity_recall": s["recall"], "entity_f1": s["f1"]},
            {"per_type": s["per_type"], "num_gold": s["num_gold"], "num_predicted": s["num_predicted"],
             "num_correct": s["num_correct"], "num_truncated_words": enc.num_truncated_words,
             "num_empty_words": enc.num_empty_words})


def read_ner_data(params: conll.ConllParams, data_uri: str, on_bad_row: Literal["count", "raise"] = "count",
                  ) -> tuple[list[conll.Sentence], list[conll.Sentence], list[dict]]:
    """Train and dev sentences with their read reports; both files are checked before any training."""
    train_name, dev_name = params.files
    train_s, train_rep = conll.read_conll(storage.join(data_uri, train_name), params, on_bad_row)
    dev_s, dev_rep = conll.read_conll(storage.join(data_uri, dev_name), params, on_bad_row)
    if not train_s:
        raise ValueError(f"{storage.join(data_uri, train_name)}: no usable training sentences")
    return train_s, dev_s, [train_rep, dev_rep]


def finetune_ner(name: str, params: conll.ConllParams, data_uri: str, checkpoint_dir: str, hp: HyperParams,
                 output_uri: str | None = None, on_bad_row: Literal["count", "raise"] = "count") -> dict:
    """Fine-tune BertForTokenClassification on the train file, score the dev file after each epoch;
    writes ``dev_predictions/{name}.txt`` and ``metrics.json`` under ``output_uri``; returns the metrics."""
    train_s, dev_s, reports = read_ner_data(params, data_uri, on_bad_row)
    train_s = train_s[:hp.max_train_examples or None]
    dev_s = dev_s[:hp.max_eval_examples or None]
    device, tok, label_names = train.pick_device(), train.load_tokenizer(checkpoint_dir), conll.labels(params)
    train_enc = encode_sentences(tok, train_s, label_names, hp.max_seq_length)
    dev_enc = encode_sentences(tok, dev_s, label_names, hp.max_seq_length)
    torch.manual_seed(hp.seed)  # the fresh head's initialisation and dropout
    model = load_pretrained(checkpoint_dir, "token_classification", num_labels=len(label_names)).to(device)
    train.check_vocabulary(tok, model, checkpoint_dir)
    history: list[dict] = []
    final: dict = {}

    def evaluate(epoch: int, train_loss: float, seconds: float, cpu_seconds: float) -> None:
        final["tags"] = predict_tags(model, dev_enc, label_names, hp, tok.pad_id, device)
        final["dev"], final["detail"] = entity_metrics(dev_s, final["tags"], dev_enc)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_seconds": seconds,
                        "epoch_cpu_seconds": cpu_seconds, "dev": {name: final["dev"]}})

    train.train_epochs(model, len(train_s), lambda rows: token_batch(train_enc, rows, tok.pad_id), hp, device,
                       evaluate, label=name)
    result = {
        "task": name, "kind": "token_classification", "hyper_params": asdict(hp), "conll": asdict(params),
        "labels": list(label_names), "num_train_examples": len(train_s), "dev": {name: final["dev"]},
        "dev_detail": {name: final["detail"]}, "score": 100 * final["dev"]["entity_f1"], "epochs": history,
        "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in history])),
        "truncated_words": {"train": train_enc.num_truncated_words, "dev": dev_enc.num_truncated_words},
        "empty_words": {"train": train_enc.num_empty_words, "dev": dev_enc.num_empty_words},
        "data_reports": reports, "device": str(device),
    }
    if output_uri is not None:
        storage.write_bytes_atomic(storage.join(output_uri, "dev_predictions", f"{name}.txt"),
                                   conll.format_predictions(dev_s, final["tags"]).encode("utf-8"))
        storage.write_json_atomic(storage.join(output_uri, "metrics.json"), result)
    return result
