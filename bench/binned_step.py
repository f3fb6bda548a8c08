"""CPU step rate of length-binned against padded micro-batches (each with and without the unpadded feed-forward
blocks), in real tokens per second of the trainer's own
DeepSpeed step (``engine.build_engine`` + ``engine.train_micro_batch``, one rank, fp32, ZeRO-1, eager, as a
CPU Ray Train worker runs it), for the ``small`` model at seq 128 and then 512.

The rows: the bench corpus's NSP instances for each length (``bench.real_tokens``' stage outputs, built if
needed), in the trainer's epoch order: padded takes the order as permuted and pads every row to
``max_seq_length``; binned takes ``inputs.binned_order`` of the same windows and cuts each micro-batch at its
bin's bound (``engine.fit_to_bin``), the base preset's bins. Both masked by the training masker
(``dynamic_masking.mask_batch``). One engine steps all four, interleaved: a round is ``--steps`` micro-batches
of each (each round starting with the next contestant), so load drifts hit them alike.

    python -m bench.binned_step                                   # small, 1 thread, seq 128 then 512
    python -m bench.binned_step --seq 128 --rounds 2 --steps 4    # develop

Figures (2026-12-07, this 2-core box, load 2.3-3.9: ``bench.learning`` ran on the other core throughout;
``--rounds 6 --steps 6``: 36 micro-batches of each contestant, interleaved), real tokens per second:

| seq (micro-batch) | padded | binned | padded + unpad | binned + unpad |
|---|---|---|---|---|
| 128 (16) | 399 (84.5% real) | 529 (95.7%): 1.32x | 408: 1.02x | 539: 1.35x |
| 512 (4) | 132 (46.9% real) | 270 (87.1%): 2.04x | 188: 1.42x | 311: 2.35x |

The unpadded feed-forward pays where padding is left (seq 512: +15% on top of binning, +42% padded) and is
within noise at 128 once binned (+2%); it stays the trainer's CPU default.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.real_tokens import BINS, ROOT, data_stages, local_ray

MICRO = {128: 16, 512: 4}
CONTESTANTS = ["padded", "binned", "padded+unpad", "binned+unpad"]
"""Rows padded to max_seq_length or cut at their bin; ``+unpad``: the feed-forward blocks on real tokens only
(``bert_core.BertModel.unpad``, the trainer's default on CPU)."""


def micro_batches(files: list[str], length: int, micro: int, count: int, binned: bool, vocab) -> list[dict]:
    """The first ``count`` micro-batches of epoch 0's order, masked and shaped as the trainer computes them."""
    from pipelines.pretrain.dynamic_masking import mask_batch
    from pipelines.pretrain.engine import fit_to_bin
    from pipelines.pretrain.inputs import InstancePlan, binned_order, epoch_windows, window_permutation
    from pipelines.schemas import TRAIN_BATCH_KEYS

    plan = InstancePlan.from_files(files)
    window = epoch_windows(plan, 0, 0)[0]
    chunks = plan.chunks()
    rows = pa.concat_tables([pq.read_table(plan.files[f]).slice(a, b - a) for f, a, b in (chunks[c] for c in window.chunks)])
    lengths = rows.column("num_tokens").to_numpy()
    order = window_permutation(0, 0, 0, window.size)
    if binned:
        order = binned_order(order, lengths, window.start, micro, BINS[length], 0, 0, 0)
    out = []
    for k in range(count):
        batch = rows.take(pa.array(order[k * micro:(k + 1) * micro])).to_pydict()
        arrays = mask_batch({key: np.asarray(batch[key], dtype=object) if key in ("input_ids", "token_type_ids")
                             else np.asarray(batch[key]) for key in ("input_ids", "token_type_ids", "is_random_next",
                                                                      "instance_id")},
                            epoch=0, seed=0, vocab_size=vocab.vocab_size, mask_token_id=vocab.mask_token_id,
                            special_token_ids=vocab.special_token_ids, max_seq_length=length,
                            pad_token_id=vocab.pad_token_id, max_predictions_per_seq=20 if length == 128 else 80)
        out.append(fit_to_bin(arrays, BINS[length]) if binned else {k2: arrays[k2] for k2 in TRAIN_BATCH_KEYS})
    return out


def run_length(length: int, files: list[str], vocab, args) -> dict:
    from bench.pretrain_engine import _single_rank_group
    from bert_core import BertForPreTraining
    from pipelines.pretrain.config import PretrainConfig
    from pipelines.pretrain.engine import Window, build_engine, model_config, train_micro_batch
    from pipelines.typed_config import from_dict

    micro = MICRO[length]
    count = args.rounds * args.steps
    batches = {"padded": micro_batches(files, length, micro, count, False, vocab),
               "binned": micro_batches(files, length, micro, count, True, vocab)}
    cfg = from_dict(PretrainConfig, {"model_preset": args.preset, "num_workers": 1, "dropout": 0.1,
                                     "deepspeed": {"zero_stage": 1},
                                     "phases": [{"max_seq_length": length, "micro_batch_size": micro,
                                                 "global_batch_size": micro, "num_steps": 10 * count + 10,
                                                 "warmup_steps": 1, "length_bins": list(BINS[length])}]})
    config = model_config(cfg, vocab.vocab_size)
    if not torch.distributed.is_initialized():
        _single_rank_group(torch.device("cpu"))
    torch.manual_seed(0)
    engine = build_engine(cfg, cfg.phases[0], BertForPreTraining(config), 1, torch.device("cpu"))
    engine.train()
    for b in batches["padded"][:2]:  # warm-up: allocator, DeepSpeed's first step
        train_micro_batch(engine, b, torch.device("cpu"), None, config, Window())
    names = CONTESTANTS
    seconds, tokens, positions = ({n: 0 for n in names} for _ in range(3))
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts with the next one
            engine.module.bert.unpad = name.endswith("unpad")
            chunk = batches[name.split("+")[0]][r * args.steps:(r + 1) * args.steps]
            start = time.perf_counter()
            for b in chunk:
                train_micro_batch(engine, b, torch.device("cpu"), None, config, Window())
            seconds[name] += time.perf_counter() - start
            tokens[name] += int(sum(b["attention_mask"].sum() for b in chunk))
            positions[name] += int(sum(b["attention_mask"].size for b in chunk))
    out = {"seq": length, "micro_batch": micro, "micro_batches_each": count, "bins": list(BINS[length])}
    for name in names:
        out[name] = {"real_tokens_per_s": round(tokens[name] / seconds[name], 1), "seconds": round(seconds[name], 1),
                     "real_token_share": round(tokens[name] / positions[name], 4), "real_tokens": tokens[name]}
    base = out["padded"]["real_tokens_per_s"]
    out["speedup"] = {name: round(out[name]["real_tokens_per_s"] / base, 3) for name in names}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seq", type=int, nargs="+", default=[128, 512], choices=[128, 512])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8, help="micro-batches per contestant per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", default=ROOT)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from bench.preprocess import CORPUS_DIR, ensure_corpus
    from bert_core import WordPieceTokenizer
    from pipelines import stage_store
    from pipelines.pretrain.dynamic_masking import VocabInfo

    with local_ray():
        outputs = data_stages(args.root, ensure_corpus(CORPUS_DIR))
    vocab_txt = os.path.join(outputs["wordpiece"]["output"], "vocab.txt")
    vocab = VocabInfo.from_tokenizer(WordPieceTokenizer.from_vocab_file(vocab_txt, True))
    result = {"bench": "binned_step", "preset": args.preset, "threads": args.threads,
              "load_average_start": [round(x, 2) for x in os.getloadavg()], "lengths": []}
    for length in args.seq:
        files = stage_store.data_files(outputs["nsp_pairs"][f"seq{length}"])
        r = run_length(length, files, vocab, args)
        result["lengths"].append(r)
        print(f"seq {length} ({args.preset}, micro-batch {r['micro_batch']}, {args.threads} thread), real tokens/s: "
              + ", ".join(f"{n} {r[n]['real_tokens_per_s']:,.0f} ({100 * r[n]['real_token_share']:.1f}% real, "
                          f"{r['speedup'][n]:.2f}x)" for n in CONTESTANTS), flush=True)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average: {result['load_average_start']} -> {result['load_average_end']}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # as bench.pretrain_engine: skip the gloo / DeepSpeed teardown
