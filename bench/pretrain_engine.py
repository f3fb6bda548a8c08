"""The trainer's own step on one device: the DeepSpeed engine ``engine.build_engine`` builds (bf16,
ZeRO, compiled on GPU) stepped by ``engine.train_micro_batch``, tokens/s and MFU from the
trainer's metrics line (``engine.summarise``). No Ray: batches are pre-masked host arrays shaped as
the masking stage hands them over (int64 numpy), so this is the step without the input stream.

    python -m bench.pretrain_engine                             # base, seq 128, micro-batch 256 on CUDA, ZeRO-1
    python -m bench.pretrain_engine --batch 512 --zero-stage 0  # one 512-sequence step, plain data parallel
    python -m bench.pretrain_engine --profile 3                 # + the top CUDA kernels of 3 steps (stderr)
    python -m bench.pretrain_engine --preset tiny --batch 4 --steps 2 --device cpu   # CPU dry run (gloo, fp32)

On a GPU machine without DeepSpeed, carry the wheels ``bench/gpu_wheels.sh`` downloads (see there).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import torch

from bench.model import make_batch, max_predictions
from bench.pretrain_gpu import add_common_args, profile_steps, run_cli, sync
from bert_core import BertForPreTraining, count_parameters
from pipelines.schemas import TRAIN_BATCH_KEYS
from pipelines.typed_config import from_dict

VOCAB_SIZE = 30522  # bert-base-uncased


def _single_rank_group(device: torch.device) -> None:
    """World size 1, as one Ray Train worker of one sees it."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def pretrain_config(args, use_gpu: bool):
    from pipelines.pretrain.config import PretrainConfig

    return from_dict(PretrainConfig, {
        "model_preset": args.preset, "num_workers": 1, "use_gpu": use_gpu, "compile": args.compile,
        "deepspeed": {"zero_stage": args.zero_stage, "precision": args.precision},
        "phases": [{"max_seq_length": args.seq, "micro_batch_size": args.batch, "global_batch_size": args.batch,
                    "num_steps": args.warmup + args.steps + args.profile + 1, "warmup_steps": 1,
                    "max_predictions_per_seq": max_predictions(args.seq)}]})


def run(args) -> dict:
    device = args.device
    os.environ.setdefault("DS_ACCELERATOR", device.type)
    from pipelines.pretrain.metrics import gpu_peak
    from pipelines.pretrain.engine import (Window, build_engine, model_config, static_predictions, summarise,
                                           train_micro_batch)

    cfg = pretrain_config(args, use_gpu=device.type == "cuda")
    phase = cfg.phases[0]
    config = model_config(cfg, VOCAB_SIZE)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _single_rank_group(device)
    torch.manual_seed(cfg.seed)
    model = BertForPreTraining(config)
    start = time.perf_counter()
    engine = build_engine(cfg, phase, model, 1, device)
    init_s = time.perf_counter() - start
    num_predictions = static_predictions(cfg, phase)
    batches = [dict(zip(TRAIN_BATCH_KEYS, (t.numpy() for t in make_batch(config, args.batch, args.seq, "cpu", seed=k))))
               for k in range(4)]
    peak = gpu_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None

    def steps(n: int, window: Window) -> None:
        for k in range(n):
            train_micro_batch(engine, batches[k % len(batches)], device, num_predictions, config, window)

    engine.train()
    start = time.perf_counter()
    steps(args.warmup, Window())
    sync(device)
    warmup_s = time.perf_counter() - start
    window = Window()
    steps(args.steps, window)
    line = summarise(window, engine, args.warmup + args.steps, 0, 1, peak)  # waits for the device
    if args.profile:
        profile_steps(lambda n: steps(n, Window()), args.profile, device, title="trainer steps")
    result = {"bench": "pretrain_engine", "preset": args.preset, "params": count_parameters(model),
              "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "precision": cfg.precision, "zero_stage": cfg.deepspeed.zero_stage, "compiled": cfg.compiled,
              "optimizer": type(engine.optimizer).__name__, "batch": args.batch, "seq": args.seq,
              "num_predictions": num_predictions, "steps": args.steps, "init_s": round(init_s, 1),
              "warmup_s": round(warmup_s, 1), "step_s": round(args.batch * args.seq / line["tokens_per_s"], 5),
              "tokens_per_s": round(line["tokens_per_s"], 1), "mfu": line.get("mfu"),
              "mfu_measured_matmul": line.get("mfu_measured_matmul"),
              "mlm_loss": round(line["mlm_loss"], 4)}
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, steps=20, warmup=3)
    p.add_argument("--zero-stage", type=int, default=1, help="the trainer's default: 1")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 on GPU, fp32 on CPU (the trainer's resolution)")
    compile_group = p.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None)
    compile_group.add_argument("--no-compile", dest="compile", action="store_false",
                               help="default: the trainer's resolution (compiled on GPU below ZeRO-3)")
    return run_cli(p, argv, run)


if __name__ == "__main__":
    main()
    # Skip interpreter teardown: on CPU, about 1 run in 10 here aborted at exit ("terminate called without
    # an active exception", no Python frame) after the result was printed, from a native thread of the
    # gloo / DeepSpeed stack; a minimal DeepSpeed + gloo script did not reproduce it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
