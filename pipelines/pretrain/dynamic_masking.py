"""INSTANCES (parquet shards) -> fixed-shape masked training batches (``schemas.TRAIN_BATCH_KEYS``).

Dynamic masking (as RoBERTa): nothing is written to disk; masks are drawn when batches are read for
training, with a seed derived from ``(base seed, epoch, instance_id)`` so every epoch sees new masks
while a given (epoch, instance) is masked identically whatever the batch size, block layout or
worker that reads it.

Ways in:
- ``MaskInstances``: the ``map_batches`` callable class the trainer runs on CPU actors between each
  rank's rows of the epoch order and its training loop (``pipelines.pretrain.inputs``); rows carry
  their epoch.
- ``mask_batch(batch, ...)``: pure, per batch (what ``MaskInstances`` calls).

The masking settings are the pretraining config's (``pipelines.pretrain.config.MaskingConfig``: MLM
probability, whole words; seed and lengths from the run and its phase).

Output keys, all int64: ``input_ids``/``token_type_ids``/``attention_mask``/``mlm_labels`` of shape
(B, max_seq_length), ``nsp_labels`` of shape (B,) with 1 = B is a random next sentence (HF's
convention: 0 = "B continues A"). ``mlm_labels`` is -100 except at the selected positions.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bert_core.masking import mask_rows
from pipelines.schemas import TRAIN_BATCH_KEYS


def instance_seed(seed: int, epoch: int, instance_id: str) -> int:
    """A 63-bit seed that depends only on (seed, epoch, instance_id)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{instance_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _rows(column: Any) -> list[np.ndarray]:
    """A list/object-array/2-D array column as a list of 1-D int64 arrays."""
    return [np.asarray(v, dtype=np.int64) for v in column]


def mask_batch(
    batch: Mapping[str, Any],
    *,
    epoch: int,
    seed: int,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids: Sequence[int],
    max_seq_length: int,
    pad_token_id: int = 0,
    mlm_probability: float = 0.15,
    max_predictions_per_seq: int | None = 20,
    continuation: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Mask and pad one batch of INSTANCES rows.

    ``batch`` holds at least ``input_ids``, ``token_type_ids`` (ragged: lists, object arrays of
    arrays, as ``iter_batches(batch_format="numpy")`` gives them), ``is_random_next`` and
    ``instance_id``. Returns the five ``TRAIN_BATCH_KEYS`` as int64 arrays, (B, max_seq_length)
    and (B,). Pure: the same rows, epoch and seed give the same arrays, whatever the batching.
    """
    input_rows = [torch.from_numpy(ids) for ids in _rows(batch["input_ids"])]
    type_rows = _rows(batch["token_type_ids"])
    ids_of_instances = [str(v) for v in batch["instance_id"]]
    n = len(input_rows)
    lengths = np.array([len(ids) for ids in input_rows], dtype=np.int64)
    for i in np.flatnonzero(lengths > max_seq_length)[:1]:
        raise ValueError(f"instance {ids_of_instances[i]!r} has {lengths[i]} tokens, more than "
                         f"max_seq_length={max_seq_length}")
    seeds = [instance_seed(seed, epoch, iid) for iid in ids_of_instances]
    masked, labels = mask_rows(input_rows, seeds, max_seq_length, vocab_size=vocab_size, mask_token_id=mask_token_id,
                               special_token_ids=special_token_ids, pad_token_id=pad_token_id,
                               mlm_probability=mlm_probability, max_predictions_per_seq=max_predictions_per_seq,
                               continuation=continuation)
    out = {"input_ids": masked.numpy(), "mlm_labels": labels.numpy()}
    out["token_type_ids"] = np.zeros((n, max_seq_length), dtype=np.int64)
    for i, types in enumerate(type_rows):
        out["token_type_ids"][i, :len(types)] = types
    out["attention_mask"] = (np.arange(max_seq_length) < lengths[:, None]).astype(np.int64)
    out["nsp_labels"] = np.asarray(batch["is_random_next"], dtype=np.int64).reshape(n)
    return {k: out[k] for k in TRAIN_BATCH_KEYS}


@dataclasses.dataclass(frozen=True)
class VocabInfo:
    """What masking needs to know about the vocabulary (picklable, cheap to ship to workers)."""

    vocab_size: int
    mask_token_id: int
    pad_token_id: int
    special_token_ids: tuple[int, ...]
    continuation: tuple[bool, ...] | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, whole_word: bool = False) -> "VocabInfo":
        """From a ``bert_core.tokenizer.WordPieceTokenizer``."""
        cont = tuple(p.startswith("##") for p in tokenizer.vocab()) if whole_word else None
        return cls(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.pad_id, tuple(tokenizer.special_ids), cont)


class MaskInstances:
    """Ray Data ``map_batches`` callable (the trainer's masking stage, on CPU actors): INSTANCES rows with an
    ``epoch`` column (or a fixed ``epoch``) -> the five ``TRAIN_BATCH_KEYS`` plus ``instance_id`` and
    ``epoch``. Each row is seeded by (seed, its epoch, its instance_id), so a mask is the same whichever
    worker computes it and however the rows are batched."""

    def __init__(self, vocab: VocabInfo, seed: int, max_seq_length: int, mlm_probability: float = 0.15,
                 max_predictions_per_seq: int | None = 20, whole_word: bool = False, epoch: int | None = None):
        if whole_word and vocab.continuation is None:
            raise ValueError("whole-word masking needs VocabInfo with a continuation table")
        self.vocab, self.seed, self.epoch = vocab, seed, epoch
        self.kwargs = dict(seed=seed, vocab_size=vocab.vocab_size, mask_token_id=vocab.mask_token_id,
                           special_token_ids=vocab.special_token_ids, max_seq_length=max_seq_length,
                           pad_token_id=vocab.pad_token_id, mlm_probability=mlm_probability,
                           max_predictions_per_seq=max_predictions_per_seq,
                           continuation=torch.tensor(vocab.continuation, dtype=torch.bool) if whole_word else None)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        n = len(batch["instance_id"])
        epochs = np.asarray(batch["epoch"], dtype=np.int64) if self.epoch is None else np.full(n, self.epoch)
        parts = []
        for epoch in np.unique(epochs):  # a batch may straddle two epochs; each run keeps its epoch's seeds
            rows = np.flatnonzero(epochs == epoch)
            sub = {k: np.asarray(batch[k], dtype=object)[rows] if k in ("input_ids", "token_type_ids")
                   else np.asarray(batch[k])[rows] for k in ("input_ids", "token_type_ids", "is_random_next",
                                                            "instance_id")}
            out = mask_batch(sub, epoch=int(epoch), **self.kwargs)
            parts.append((rows, {**out, "instance_id": np.asarray(sub["instance_id"]).astype(str),
                                 "epoch": np.full(len(rows), epoch, dtype=np.int64)}))
        if len(parts) == 1:
            return parts[0][1]
        order = np.argsort(np.concatenate([rows for rows, _ in parts]), kind="stable")
        return {k: np.concatenate([p[k] for _, p in parts])[order] for k in parts[0][1]}
