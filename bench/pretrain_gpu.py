"""Pretraining step throughput and model FLOPs utilisation on one GPU: plain torch + bert_core only
(no Ray, no DeepSpeed), so it runs on a bare GPU machine, with the step the trainer runs there.

    python -m bench.pretrain_gpu                                   # base, seq 128, batch 256, compiled, as the trainer
    python -m bench.pretrain_gpu --precision autocast              # fp32 weights + bf16 autocast instead
    python -m bench.pretrain_gpu --compile-mode max-autotune-no-cudagraphs
    python -m bench.pretrain_gpu --profile 3                       # + the top CUDA kernels of 3 steps (stderr)
    python -m bench.pretrain_gpu --steps 2 --preset tiny --device cpu --no-compile   # CPU smoke run

One step = forward + backward + gradient clipping + fused AdamW on batches masked like the trainer's
(15% of tokens, at most round(0.15 * seq) + 1 per sequence, 80/10/10), the MLM head decoding a
static number of slots per sequence (no host sync).

``--precision bf16`` (default) is what the trainer's DeepSpeed bf16 mode does: the model holds bf16
weights and gradients; AdamW updates an fp32 master copy that is copied back after each step.
``autocast`` keeps fp32 weights and runs matmuls in bf16 (LayerNorm outputs and the residual
stream stay fp32). FLOPs come from ``pipelines.pretrain.metrics.flops_per_step``, the count the
trainer logs; MFU = FLOP/s / the GPU's datasheet dense bf16 peak (989 TFLOP/s on H100/H200 SXM;
``--peak-tflops`` overrides it), with ``mfu_measured_matmul`` against the measured matmul rate beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from bench.model import device_mfu, make_batch, max_predictions
from bert_core import BertConfig, BertForPreTraining, count_parameters
from pipelines.pretrain.metrics import flops_per_step

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")


class MasterWeightAdamW:
    """DeepSpeed's bf16 optimizer in miniature: bf16 model weights and gradients, fused AdamW over an
    fp32 master copy, the result copied back into the bf16 weights."""

    def __init__(self, params: list[torch.nn.Parameter], fused: bool, **hyper):
        self.params = params
        self.master = [p.detach().float().requires_grad_(True) for p in params]
        self.optimizer = torch.optim.AdamW(self.master, fused=fused, **hyper)

    def step(self, max_norm: float) -> None:
        for m, p in zip(self.master, self.params):
            m.grad = p.grad.float()
        torch.nn.utils.clip_grad_norm_(self.master, max_norm, foreach=True)
        self.optimizer.step()
        torch._foreach_copy_([p.data for p in self.params], self.master)
        for p in self.params:
            p.grad = None


def build_step(args, config: BertConfig, device: torch.device):
    """The model and a closure running one training step on a batch list."""
    torch.manual_seed(0)
    model = BertForPreTraining(config).to(device).train()
    on_gpu = device.type == "cuda"
    hyper = {"lr": 1e-4, "weight_decay": 0.01}
    if args.precision == "bf16":
        model.to(torch.bfloat16)
        optimizer = MasterWeightAdamW(list(model.parameters()), fused=on_gpu, **hyper)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), fused=on_gpu, **hyper)
    forward = model
    if args.compile:
        mode = None if args.compile_mode == "default" else args.compile_mode
        forward = torch.compile(model, dynamic=False, mode=mode)
    autocast = args.precision == "autocast" and on_gpu
    num_predictions = max_predictions(args.seq)

    def step(batch: list) -> None:
        ids, types, mask, labels, nsp = batch
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = forward(ids, types, mask, labels, nsp, num_predictions=num_predictions).loss
        loss.backward()
        if isinstance(optimizer, MasterWeightAdamW):
            optimizer.step(1.0)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return model, step


def sync(device: torch.device) -> None:
    """Wait for the GPU (steps are timed by wall clock); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_steps(run_steps, steps: int, device: torch.device, title: str = "steps") -> None:
    """The kernels of ``run_steps(steps)`` by total time (CUDA time on a GPU), to stderr."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_steps(steps)
        sync(device)
    print(f"== top kernels of {steps} {title} ==", file=sys.stderr)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=90), file=sys.stderr, flush=True)


def add_common_args(p: argparse.ArgumentParser, steps: int, warmup: int) -> None:
    """The options both GPU step benchmarks take (this one and bench.pretrain_engine)."""
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default: 256 on CUDA, 8 on CPU)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS", help="print the top kernels of STEPS steps")


def run_cli(p: argparse.ArgumentParser, argv: list[str] | None, run) -> dict:
    """Both benchmarks' ``main``: parse (``args.device`` becomes a torch.device), ``run(args)``, add the GPU's
    peak memory, print the JSON line."""
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    args.warmup = min(args.warmup, max(1, args.steps))
    args.device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.batch is None:
        args.batch = 256 if args.device.type == "cuda" else 8
    result = run(args)
    if args.device.type == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated(args.device) / 2**30, 2)
    print(json.dumps(result), flush=True)
    return result


def run(args) -> dict:
    device = args.device
    config = BertConfig.preset(args.preset)
    model, step = build_step(args, config, device)
    batches = [make_batch(config, args.batch, args.seq, str(device), seed=k) for k in range(4)]
    if args.no_padding_mask:  # full-length rows: without a mask SDPA may take the flash kernel
        batches = [[ids, types, None, labels, nsp] for ids, types, _, labels, nsp in batches]

    def run_steps(n: int) -> None:
        for k in range(n):
            step(batches[k % len(batches)])

    start = time.perf_counter()
    run_steps(args.warmup)
    sync(device)
    warmup_s = time.perf_counter() - start
    times = []
    for k in range(args.steps):
        start = time.perf_counter()
        step(batches[k % len(batches)])
        sync(device)
        times.append(time.perf_counter() - start)
    if args.profile:
        profile_steps(run_steps, args.profile, device)
    seconds = statistics.median(times)
    masked = int((batches[0][3] != -100).sum())
    flops = flops_per_step(config, args.batch, args.seq, masked)
    result = {"preset": args.preset, "params": count_parameters(model), "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "precision": args.precision, "batch": args.batch, "seq": args.seq,
              "compile": args.compile_mode if args.compile else None, "padding_mask": not args.no_padding_mask,
              "steps": args.steps, "warmup_s": round(warmup_s, 1), "step_s": round(seconds, 5),
              "tokens_per_s": round(args.batch * args.seq / seconds, 1),
              "tflops_per_s": round(flops / seconds / 1e12, 2),
              **device_mfu(flops, seconds, device, args.peak_tflops)}
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, steps=30, warmup=5)
    p.add_argument("--precision", default="bf16", choices=["bf16", "autocast", "fp32"],
                   help="bf16: bf16 weights + fp32 master (the trainer's DeepSpeed bf16); autocast: fp32 weights, "
                        "bf16 matmuls (CUDA only); fp32")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager (default: torch.compile)")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES)
    p.add_argument("--no-padding-mask", action="store_true", help="pass attention_mask=None (rows are full length)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="datasheet peak to divide by (default: the GPU's, from pipelines.pretrain.metrics)")
    return run_cli(p, argv, run)


if __name__ == "__main__":
    main()
