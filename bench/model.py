"""Training-step throughput of bert_core vs transformers.BertForPreTraining (same config, same run).

    python -m bench.model                      # CPU, fp32, small and base, seq 128, batch 32
    python -m bench.model --presets small --steps 5
    python -m bench.model --device cuda --dtype bf16 --presets base --batch 256 --compile --static  # GPU + MFU

One step = forward + backward + AdamW on a batch with 15% of tokens selected for MLM. Runs of the
two implementations are interleaved so background load hits both alike; the median step is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bert_core import BertConfig, BertForPreTraining, count_parameters, mask_tokens
from pipelines.pretrain.metrics import flops_per_step, gpu_peak, mfu_metrics


def max_predictions(seq: int) -> int:
    return round(0.15 * seq) + 1


def make_batch(config: BertConfig, batch: int, seq: int, device: str, seed: int = 0):
    """[CLS] A [SEP] B [SEP] of random ids, masked by bert_core's mask_tokens (15%, 80/10/10)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (batch, seq), generator=g)
    ids[:, 0], ids[:, seq // 2 - 1], ids[:, -1] = 2, 3, 3
    types = torch.zeros_like(ids)
    types[:, seq // 2:] = 1
    mask = torch.ones_like(ids)
    ids, labels = mask_tokens(ids, vocab_size=config.vocab_size, mask_token_id=4, special_token_ids=(0, 1, 2, 3, 4),
                              seed=seed, max_predictions_per_seq=max_predictions(seq))
    nsp = torch.randint(0, 2, (batch,), generator=g)
    return [t.to(device) for t in (ids, types, mask, labels, nsp)]


def build(kind: str, config: BertConfig, device: str):
    torch.manual_seed(0)
    if kind == "bert_core":
        model = BertForPreTraining(config)
    else:
        import transformers

        hf_config = transformers.BertConfig(**config.to_hf_dict())
        hf_config._attn_implementation = "sdpa"
        model = transformers.BertForPreTraining(hf_config)
    model.to(device).train()
    return model


def step_fn(kind, model, opt, batch, dtype, device, num_predictions=None):
    ids, types, mask, labels, nsp = batch
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            if kind == "bert_core":
                loss = model(ids, types, mask, labels, nsp, num_predictions=num_predictions).loss
            else:
                loss = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                             next_sentence_label=nsp).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(preset: str, args) -> dict:
    config = BertConfig.preset(preset)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    batch = make_batch(config, args.batch, args.seq, args.device)
    if args.no_padding_mask:
        batch[2] = None
    runners = {}
    for kind in args.impls:
        model = build(kind, config, args.device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device.startswith("cuda"))
        if args.compile:
            model = torch.compile(model)
        num_predictions = max_predictions(args.seq) if args.static and kind == "bert_core" else None
        runners[kind] = step_fn(kind, model, opt, batch, dtype, args.device, num_predictions)
        for _ in range(args.warmup):
            runners[kind]()
        sync(args.device)
    times = {k: [] for k in runners}
    for _ in range(args.steps):
        for kind, run in runners.items():  # interleaved
            sync(args.device)
            t0 = time.perf_counter()
            run()
            sync(args.device)
            times[kind].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    flops = flops_per_step(config, args.batch, args.seq, int((batch[3] != -100).sum()))
    out = {"preset": preset, "params": count_parameters(build("bert_core", config, "cpu")),
           "batch": args.batch, "seq": args.seq, "dtype": args.dtype, "device": args.device}
    for kind, ts in times.items():
        med = statistics.median(ts)
        out[f"{kind}_tokens_per_s"] = round(tokens / med, 1)
        out[f"{kind}_step_s"] = round(med, 4)
        if args.device.startswith("cuda"):
            for name, value in device_mfu(flops, med, torch.device(args.device), args.peak_tflops).items():
                out[f"{kind}_{name}"] = value
    if "bert_core" in times and "transformers" in times:
        out["speedup"] = round(out["bert_core_tokens_per_s"] / out["transformers_tokens_per_s"], 3)
    return out


def device_mfu(flops: float, seconds: float, device: torch.device, peak_tflops: float | None) -> dict:
    """``mfu`` against the datasheet peak of ``device`` (or ``peak_tflops``) and ``mfu_measured_matmul``
    against the measured matmul rate, rounded; None off a GPU or for one without a known peak."""
    peak = gpu_peak(torch.cuda.get_device_name(device), peak_tflops and peak_tflops * 1e12) \
        if device.type == "cuda" else None
    found = mfu_metrics(flops, seconds, peak)
    return {k: round(found[k], 4) if k in found else None for k in ("mfu", "mfu_measured_matmul")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["small", "base"])
    p.add_argument("--impls", nargs="+", default=["bert_core", "transformers"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the whole model")
    p.add_argument("--no-padding-mask", action="store_true",
                   help="pass attention_mask=None (full-length sequences): lets SDPA pick the flash kernel")
    p.add_argument("--static", action="store_true",
                   help="bert_core decodes a static number of MLM slots (no host sync; one compiled graph)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="datasheet peak to divide by (default: the GPU's, from pipelines.pretrain.metrics)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for preset in args.presets:
        print(json.dumps(measure(preset, args)), flush=True)


if __name__ == "__main__":
    main()
