"""Pretraining step throughput and model FLOPs utilisation on one GPU: plain torch + bert_core only
(no Ray, no DeepSpeed), so it runs on a bare GPU machine.

    python -m bench.pretrain_gpu                                   # base, bf16, seq 128, batch 256, CUDA
    python -m bench.pretrain_gpu --compile                         # same, torch.compile'd
    python -m bench.pretrain_gpu --steps 2 --preset tiny           # CPU smoke run (batch 8, fp32)

One step = forward + backward + fused AdamW + grad clipping, bf16 autocast, on batches masked like the
trainer's (15% of tokens, at most round(0.15 * seq) + 1 per sequence, 80/10/10), with the MLM head
decoding a static number of slots per sequence (no host sync). FLOPs come from
``pipelines.pretrain.metrics.flops_per_step`` (6 N tokens + 12 L H T per token for attention +
the MLM/NSP heads), the same count the trainer logs; MFU = FLOP/s / peak (H100 dense bf16, measured:
800 TFLOP/s; override with --peak-tflops).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bert_core import BertConfig, BertForPreTraining, count_parameters, mask_tokens
from pipelines.pretrain.metrics import H100_BF16_PEAK, flops_per_step

H100_BF16_PEAK_TFLOPS = H100_BF16_PEAK / 1e12


def make_batches(config: BertConfig, batch: int, seq: int, count: int, device: torch.device) -> list[dict]:
    """Masked [CLS] A [SEP] B [SEP] batches of random ids, full length (the trainer's static shapes)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(count):
        ids = torch.randint(5, config.vocab_size, (batch, seq), generator=g)
        ids[:, 0], ids[:, seq // 2 - 1], ids[:, -1] = 2, 3, 3
        types = torch.zeros_like(ids)
        types[:, seq // 2:] = 1
        inputs, labels = mask_tokens(ids, vocab_size=config.vocab_size, mask_token_id=4,
                                     special_token_ids=(0, 1, 2, 3, 4), seed=k,
                                     max_predictions_per_seq=round(0.15 * seq) + 1)
        tensors = {"input_ids": inputs, "token_type_ids": types, "attention_mask": torch.ones_like(ids),
                   "mlm_labels": labels, "nsp_labels": torch.randint(0, 2, (batch,), generator=g)}
        out.append({k: v.to(device, non_blocking=True) for k, v in tensors.items()})
    return out


def run(args) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if args.dtype == "bf16" and device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    config = BertConfig.preset(args.preset)
    torch.manual_seed(0)
    model = BertForPreTraining(config).to(device).train()
    params = count_parameters(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")
    forward = torch.compile(model) if args.compile else model
    num_predictions = round(0.15 * args.seq) + 1
    batches = make_batches(config, args.batch, args.seq, 4, device)

    def step(batch: dict) -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(**batch, num_predictions=num_predictions).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for k in range(args.warmup):
        step(batches[k % len(batches)])
    sync()
    times = []
    for k in range(args.steps):
        start = time.perf_counter()
        step(batches[k % len(batches)])
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    masked = int((batches[0]["mlm_labels"] != -100).sum())
    flops = flops_per_step(config, args.batch, args.seq, masked)
    result = {"preset": args.preset, "params": params, "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "dtype": str(dtype).removeprefix("torch."), "batch": args.batch, "seq": args.seq,
              "compile": args.compile, "steps": args.steps, "step_s": round(seconds, 5),
              "tokens_per_s": round(args.batch * args.seq / seconds, 1),
              "tflops_per_s": round(flops / seconds / 1e12, 2),
              "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 4) if device.type == "cuda" else None}
    if device.type == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 8 on CPU")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK_TFLOPS)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    args.warmup = min(args.warmup, max(1, args.steps))
    if args.batch is None:
        on_gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
        args.batch = 256 if on_gpu else 8
    result = run(args)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
