"""bench.pretrain_gpu and bench.pretrain_engine: CPU smoke runs, and the GPU bench's bf16 optimizer stand-in."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpu_benchmark_smoke_on_cpu(capsys, precision):
    from bench.pretrain_gpu import main

    result = main(["--steps", "2", "--preset", "tiny", "--device", "cpu", "--seq", "64", "--no-compile",
                   "--precision", precision])
    assert result["steps"] == 2 and result["tokens_per_s"] > 0
    assert result["mfu"] is None and result["mfu_measured_matmul"] is None
    assert json.loads(capsys.readouterr().out)["precision"] == precision


@pytest.mark.parametrize("zero_stage, optimizer", [(1, "DeepSpeedZeroOptimizer"), (0, "AdamW")])
def test_engine_benchmark_runs_the_trainers_engine_on_cpu(zero_stage, optimizer):
    """bench.pretrain_engine: the trainer's build_engine + train_micro_batch + summarise in one process
    (its own gloo group, hence a subprocess); ZeRO-0 on one rank ends with torch's fused AdamW bare."""
    import math
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench.pretrain_engine", "--preset", "tiny", "--batch", "4",
                          "--seq", "32", "--steps", "2", "--warmup", "1", "--device", "cpu",
                          "--zero-stage", str(zero_stage)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert (result["optimizer"], result["zero_stage"], result["precision"]) == (optimizer, zero_stage, "fp32")
    assert result["compiled"] is False and result["num_predictions"] is None
    assert result["mfu"] is None and result["mfu_measured_matmul"] is None
    assert result["tokens_per_s"] > 0
    assert abs(result["mlm_loss"] - math.log(30522)) < 0.5  # untrained logits over the full vocabulary


def test_master_weight_adamw_is_adamw_on_fp32_copies():
    """The GPU bench's stand-in for DeepSpeed's bf16 optimizer: bf16 weights end as the bf16 rounding
    of an fp32 AdamW run fed the same (bf16) gradients, with the same clipping."""
    from bench.pretrain_gpu import MasterWeightAdamW

    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(5, 3).bfloat16()), torch.nn.Parameter(torch.randn(4).bfloat16())]
    initial = [w.detach().clone() for w in weights]
    reference = [w.detach().float().requires_grad_(True) for w in weights]
    opt = MasterWeightAdamW(weights, fused=False, lr=0.1, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(reference, lr=0.1, weight_decay=0.01)
    for k in range(3):
        grads = [torch.randn_like(w) * (k + 1) for w in weights]  # bf16
        for w, r, g in zip(weights, reference, grads):
            w.grad, r.grad = g, g.float()
        opt.step(max_norm=1.0)
        torch.nn.utils.clip_grad_norm_(reference, 1.0)
        ref_opt.step()
        for w, r in zip(weights, reference):
            assert w.grad is None and w.dtype == torch.bfloat16
            assert torch.equal(w.detach(), r.detach().bfloat16())
    assert all(not torch.equal(w.detach(), i) for w, i in zip(weights, initial))  # it did train
