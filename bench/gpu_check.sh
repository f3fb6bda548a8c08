#!/usr/bin/env bash
# The device check for a lent GPU (torch and transformers there, no ray/deepspeed): GPU tests, then
# `base` seq 128 training-step throughput and MFU of the step the trainer runs on GPU
# (bench.pretrain_gpu) next to the earlier autocast setting, a kernel profile, and two speed levers.
# Sized for 5-8 minutes: each configuration compiles for about a minute, the autotuned one longer.
# JSON lines go to stdout and $OUT/gpu_check.jsonl; the profile to $OUT/profile.txt.
#
#   bash bench/gpu_check.sh            # on the device: run(command="bash bench/gpu_check.sh", timeout_s=600)
#   GPU_CHECK_EXTRA="--preset tiny --batch 4 --steps 1 --warmup 1 --device cpu" bash bench/gpu_check.sh  # CPU dry run
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu_check}
EXTRA=${GPU_CHECK_EXTRA:-}  # appended to every bench command (later flags win)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/bert_core/test_gpu.py 2>&1 | tail -3

bench() {  # one configuration, bounded so one slow compile cannot eat the rest
  local limit=$1; shift
  timeout "$limit" python3 -m bench.pretrain_gpu --preset base --seq 128 --steps 20 --warmup 3 "$@" $EXTRA \
    2>>"$OUT/stderr.txt" | tee -a "$OUT/gpu_check.jsonl"
}
bench 150 --batch 512                                            # bf16 weights + fp32 master: the trainer's path
bench 150 --batch 512 --precision autocast                       # the earlier figure's setting (43.4% on H100)
bench 150 --batch 512 --no-padding-mask                          # full rows without a mask: SDPA's flash kernel
timeout 150 python3 -m bench.pretrain_gpu --preset base --batch 512 --steps 5 --warmup 3 --profile 3 $EXTRA \
  2>"$OUT/profile.txt" | tee -a "$OUT/gpu_check.jsonl"             # where the time goes (top CUDA kernels)
sed -n '/== top CUDA kernels/,$p' "$OUT/profile.txt" | head -40
bench 240 --batch 512 --compile-mode max-autotune-no-cudagraphs  # autotuned GEMMs with fused epilogues (slow compile)
