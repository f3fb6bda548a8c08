"""Dynamic masking of one training batch on the host (what each trainer process does per micro-batch):
``mask_batch`` (batched: each row's draws, then one pass over the padded batch) against masking the
rows one by one with ``mask_tokens`` (how mask_batch worked before), same outputs, one process.

    python -m bench.masking                        # 512 x 128, the GPU step's batch
    python -m bench.masking --batch 16 --repeats 200
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bert_core.masking import IGNORE_INDEX, mask_tokens
from pipelines.pretrain.dynamic_masking import instance_seed, mask_batch

SPECIAL = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK] of the synthetic vocabulary


def instances(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """INSTANCES rows as iter_batches(batch_format="numpy") hands them over: ragged object arrays,
    lengths between half and all of ``seq``, [CLS] A [SEP] B [SEP]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 2, seq + 1, batch)
    ids, types = np.empty(batch, dtype=object), np.empty(batch, dtype=object)
    for i, n in enumerate(lengths):
        row = rng.integers(len(SPECIAL), vocab, n).astype(np.int32)
        row[0], row[n // 2], row[-1] = 2, 3, 3
        ids[i] = row
        types[i] = (np.arange(n) > n // 2).astype(np.int8)
    return {"input_ids": ids, "token_type_ids": types, "is_random_next": rng.integers(0, 2, batch).astype(bool),
            "num_tokens": lengths.astype(np.int32), "instance_id": np.array([f"doc{i}#0" for i in range(batch)],
                                                                           dtype=object)}


def row_by_row(batch, *, epoch, seed, vocab_size, mask_token_id, special_token_ids, max_seq_length, pad_token_id):
    """The former mask_batch: mask_tokens on each row, padded."""
    n = len(batch["input_ids"])
    inputs = np.full((n, max_seq_length), pad_token_id, dtype=np.int64)
    labels = np.full((n, max_seq_length), IGNORE_INDEX, dtype=np.int64)
    for i, (row, iid) in enumerate(zip(batch["input_ids"], batch["instance_id"])):
        masked, label = mask_tokens(torch.from_numpy(np.asarray(row, dtype=np.int64)), vocab_size=vocab_size,
                                    mask_token_id=mask_token_id, special_token_ids=special_token_ids,
                                    pad_token_id=pad_token_id, seed=instance_seed(seed, epoch, str(iid)),
                                    max_predictions_per_seq=20)
        inputs[i, :len(row)], labels[i, :len(row)] = masked.numpy(), label.numpy()
    return inputs, labels


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    batch = instances(args.batch, args.seq, args.vocab)
    kw = dict(epoch=0, seed=0, vocab_size=args.vocab, mask_token_id=4, special_token_ids=SPECIAL,
              max_seq_length=args.seq, pad_token_id=0)
    out = mask_batch(batch, **kw, max_predictions_per_seq=20)
    inputs, labels = row_by_row(batch, **kw)
    assert np.array_equal(out["input_ids"], inputs) and np.array_equal(out["mlm_labels"], labels)
    batched = timed(lambda: mask_batch(batch, **kw, max_predictions_per_seq=20), args.repeats)
    rows = timed(lambda: row_by_row(batch, **kw), args.repeats)
    result = {"batch": args.batch, "seq": args.seq, "threads": 1, "mask_batch_ms": round(batched * 1e3, 2),
              "row_by_row_ms": round(rows * 1e3, 2), "speedup": round(rows / batched, 2),
              "sequences_per_s": round(args.batch / batched, 1), "identical_outputs": True}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
