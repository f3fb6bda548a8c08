"""The held-out check of pretraining: what the model learned, each number beside the baseline it must beat.

- **Held-out rows**: the last ``heldout.files`` shards of a phase's instances are never trained on (the
  trainer builds its ``InstancePlan`` from the others, so the seeded order, the deal to ranks and the
  resume cursor are those of a corpus without them). ``nsp_pairs`` writes one shard per partition and
  draws a random next segment from the document's own partition, so a held-out shard shares no
  document with the trained ones.
- **Fixed masks**: the first ``heldout.rows`` rows of those shards are masked once, by the same
  ``mask_batch`` as training, seeded by ``heldout.seed`` (not the run's seed), at the phase's length and
  prediction cap; so every score of a run, and of runs with other seeds, is on the same positions.
- **Scores** (``evaluate``, on the training engine in eval mode every ``heldout.every`` steps): MLM loss
  (mean cross-entropy over the masked positions) and accuracy, NSP loss and accuracy.
- **Baselines** (``baselines``, once, in the driver): a unigram predictor on the same masked positions,
  its token frequencies counted over the training shards (add-one smoothed over the non-special pieces):
  its loss is the cross-entropy of those positions' tokens under the corpus's unigram distribution (the
  unigram entropy, measured where the model is), its accuracy that of always guessing the most frequent
  piece; and for NSP chance (0.5) and the share of the commoner label among the held-out rows.

The baselines go to ``{run}/phase{k}/heldout.json``; the scores ride on rank 0's metrics lines
(``heldout_*`` keys). The report draws and tabulates both.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipelines import storage
from pipelines.schemas import TRAIN_BATCH_KEYS

HELDOUT_FILE = "heldout.json"
UNIGRAM_MAX_ROWS = 1 << 20
"""Training rows whose tokens are counted for the unigram baseline (whole shards, in order, until this
many): every row of a small corpus, a sample of a large one."""
COLUMNS = ("input_ids", "token_type_ids", "is_random_next", "instance_id")


def split_files(files: Sequence[str], rows: Sequence[int], num_heldout: int) -> tuple[list[str], list[str]]:
    """(trained, held out): the last ``num_heldout`` shards that hold rows (``rows``: each one's count) are
    held out, the others trained on."""
    nonempty = [i for i, n in enumerate(rows) if n > 0]
    if num_heldout >= len(nonempty):
        raise ValueError(f"heldout.files {num_heldout} leaves no shard to train on ({len(nonempty)} shards hold "
                         "rows); hold out fewer or build the instances in more (data.nsp_pairs.num_partitions)")
    held = set(nonempty[len(nonempty) - num_heldout:])
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


def footer_rows(files: Sequence[str]) -> list[int]:
    out = []
    for uri in files:
        fs, path = storage.filesystem(uri)
        out.append(pq.ParquetFile(path, filesystem=fs).metadata.num_rows)
    return out


def read_rows(files: Sequence[str], num_rows: int) -> pa.Table:
    """The first ``num_rows`` rows of ``files``, in order (only the row groups that hold them are read)."""
    parts, left = [], num_rows
    for uri in files:
        if left <= 0:
            break
        fs, path = storage.filesystem(uri)
        f = pq.ParquetFile(path, filesystem=fs)
        for g in range(f.metadata.num_row_groups):
            if left <= 0:
                break
            table = f.read_row_group(g, columns=list(COLUMNS)).slice(0, left)
            parts.append(table)
            left -= table.num_rows
    if not parts:
        raise ValueError(f"the held-out shards {list(files)} hold no rows")
    return pa.concat_tables(parts).combine_chunks()


def masked_rows(table: pa.Table, vocab, max_seq_length: int, max_predictions_per_seq: int, mlm_probability: float,
                seed: int, whole_word: bool = False) -> dict[str, np.ndarray]:
    """The rows masked once, as training masks them (``TRAIN_BATCH_KEYS``, int64), seeded by ``seed`` and
    each row's instance_id only."""
    from pipelines.pretrain.dynamic_masking import MaskInstances

    masker = MaskInstances(vocab, seed, max_seq_length, mlm_probability, max_predictions_per_seq, whole_word, epoch=0)
    batch = {k: table.column(k).to_numpy(zero_copy_only=False) for k in COLUMNS}
    out = masker(batch)
    return {k: out[k] for k in TRAIN_BATCH_KEYS}


def token_counts(files: Sequence[str], vocab_size: int, max_rows: int = UNIGRAM_MAX_ROWS) -> tuple[np.ndarray, int]:
    """(occurrences of every id, rows counted) over whole shards of ``files`` in order, until ``max_rows``."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    rows = 0
    for uri in files:
        if rows >= max_rows:
            break
        fs, path = storage.filesystem(uri)
        ids = pq.read_table(path, filesystem=fs, columns=["input_ids"]).column("input_ids")
        rows += len(ids)
        for chunk in ids.chunks:
            counts += np.bincount(pc.list_flatten(chunk).to_numpy(zero_copy_only=False), minlength=vocab_size)
    return counts, rows


def unigram_baseline(counts: np.ndarray, labels: np.ndarray, special_ids: Sequence[int]) -> dict[str, float]:
    """A predictor that ignores context, scored on the masked positions of ``labels`` (-100 elsewhere).

    Its distribution is the counted frequency of every non-special piece plus one (a piece the counted rows
    lack still gets a finite loss); special pieces are never a target, so they get none. ``loss``: mean
    -log p(target); ``accuracy``: share of targets equal to the most frequent piece; ``entropy``: the
    distribution's own entropy (nats), what ``loss`` tends to on text like the counted."""
    weights = counts.astype(np.float64) + 1.0
    weights[list(special_ids)] = 0.0
    p = weights / weights.sum()
    targets = labels[labels != -100]
    if not len(targets):
        raise ValueError("no masked position to score")
    nonzero = p[p > 0]
    return {"loss": float(-np.log(p[targets]).mean()), "accuracy": float((targets == int(np.argmax(p))).mean()),
            "entropy": float(-(nonzero * np.log(nonzero)).sum()), "most_frequent_id": int(np.argmax(p)),
            "masked_positions": int(len(targets))}


def baselines(train_files: Sequence[str], heldout: dict[str, np.ndarray], vocab) -> dict[str, Any]:
    """What the held-out scores are compared with (see the module docstring), as ``heldout.json`` holds it."""
    counts, rows = token_counts(train_files, vocab.vocab_size)
    unigram = unigram_baseline(counts, heldout["mlm_labels"], vocab.special_token_ids)
    random_next = float(heldout["nsp_labels"].mean())
    return {"rows": int(len(heldout["nsp_labels"])), "masked_positions": unigram["masked_positions"],
            "unigram_loss": unigram["loss"], "unigram_accuracy": unigram["accuracy"],
            "unigram_entropy": unigram["entropy"], "unigram_most_frequent_id": unigram["most_frequent_id"],
            "unigram_counted_rows": rows, "nsp_chance": 0.5, "nsp_majority": max(random_next, 1.0 - random_next),
            "random_next_share": random_next}


def prepare(cfg, phase, files: Sequence[str], vocab) -> tuple[list[str], dict[str, np.ndarray] | None, dict | None]:
    """(trained shards, held-out masked rows, their baselines) of one phase; no held-out part when
    ``cfg.heldout.files`` is 0."""
    if not cfg.heldout.files:
        return list(files), None, None
    train, held = split_files(files, footer_rows(files), cfg.heldout.files)
    batch = masked_rows(read_rows(held, cfg.heldout.rows), vocab, phase.max_seq_length, phase.max_predictions_per_seq,
                        cfg.masking.mlm_probability, cfg.heldout.seed, cfg.masking.whole_word)
    return train, batch, {**baselines(train, batch, vocab), "files": [f.rsplit("/", 1)[-1] for f in held]}


@torch.no_grad()
def evaluate(model, batch: dict[str, np.ndarray], micro_batch: int, device: torch.device,
             num_predictions: int | None = None) -> dict[str, float]:
    """``heldout_*`` scores of ``model`` (a module or DeepSpeed engine) on the masked rows, in eval mode
    (no dropout; the mode is restored after). Deterministic: the same weights give the same numbers."""
    from bert_core import IGNORE_INDEX

    training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # MLM loss sum, MLM right, masked, NSP loss sum, NSP right
    n = len(batch["nsp_labels"])
    try:
        for a in range(0, n, micro_batch):
            part = {k: torch.from_numpy(batch[k][a:a + micro_batch]).to(device) for k in TRAIN_BATCH_KEYS}
            out = model(**part, num_predictions=num_predictions)
            valid = out.mlm_labels != IGNORE_INDEX
            logits, targets = out.mlm_logits[valid].float(), out.mlm_labels[valid]
            nsp_logits = out.nsp_logits.float()
            sums += torch.stack([
                torch.nn.functional.cross_entropy(logits, targets, reduction="sum").double().cpu(),
                (logits.argmax(-1) == targets).sum().double().cpu(), valid.sum().double().cpu(),
                torch.nn.functional.cross_entropy(nsp_logits, part["nsp_labels"], reduction="sum").double().cpu(),
                (nsp_logits.argmax(-1) == part["nsp_labels"]).sum().double().cpu()])
    finally:
        model.train(training)
    mlm_loss, mlm_ok, masked, nsp_loss, nsp_ok = sums.tolist()
    return {"heldout_mlm_loss": mlm_loss / max(masked, 1), "heldout_mlm_accuracy": mlm_ok / max(masked, 1),
            "heldout_nsp_loss": nsp_loss / max(n, 1), "heldout_nsp_accuracy": nsp_ok / max(n, 1)}


def write_baselines(phase_uri: str, record: dict[str, Any]) -> None:
    storage.write_json_atomic(storage.join(phase_uri, HELDOUT_FILE), record)


def read_baselines(phase_uri: str) -> dict[str, Any] | None:
    uri = storage.join(phase_uri, HELDOUT_FILE)
    return storage.read_json(uri) if storage.exists(uri) else None


def summary_text(metrics: dict[str, Any], base: dict[str, Any] | None) -> str:
    """``held-out MLM loss 5.910 (unigram 6.400) acc 0.120 (0.050), NSP acc 0.610 (chance 0.5, the commoner label
    0.610)``: the phase's console line; empty when the metrics hold no held-out scores."""
    if base is None or "heldout_mlm_loss" not in metrics:
        return ""
    text = (f"held-out MLM loss {metrics['heldout_mlm_loss']:.3f} (unigram {base['unigram_loss']:.3f}) "
            f"acc {metrics['heldout_mlm_accuracy']:.3f} ({base['unigram_accuracy']:.3f})")
    if "heldout_nsp_accuracy" not in metrics:  # the MLM-only objective
        return text
    return (f"{text}, NSP acc {metrics['heldout_nsp_accuracy']:.3f} (chance 0.5, the commoner label "
            f"{base['nsp_majority']:.3f})")

