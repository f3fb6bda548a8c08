#!/usr/bin/env bash
# The device check for a lent GPU (torch and transformers there, no ray/deepspeed): GPU tests; the
# trainer's own DeepSpeed step (bench.pretrain_engine, when .whl/ carries DeepSpeed) with its kernel
# profile; then `base` seq 128 step throughput and MFU of the plain-torch mirror (bench.pretrain_gpu):
# bf16 weights, the earlier autocast setting, no padding mask, autotuned GEMMs.
# Each run is bounded by what is left of GPU_CHECK_BUDGET (default 570 s), most important first.
# JSON lines go to stdout and $OUT/gpu_check.jsonl; profiles to $OUT/profile*.txt.
#
#   bash bench/gpu_wheels.sh           # here first: DeepSpeed and its missing needs into .whl/
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)     # on the device
#   GPU_CHECK_EXTRA="--preset tiny --batch 4 --steps 1 --warmup 1 --device cpu" bash bench/gpu_check.sh  # CPU dry run
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu_check}
EXTRA=${GPU_CHECK_EXTRA:-}  # appended to every bench command (later flags win)
END=$((SECONDS + ${GPU_CHECK_BUDGET:-570}))
mkdir -p "$OUT"

bounded() {  # bounded LIMIT CMD...: at most LIMIT seconds, and never past the budget
  local limit=$1; shift
  local left=$((END - SECONDS - 5))
  ((left < limit)) && limit=$left
  ((limit < 20)) && { echo "skipped (budget spent): $*" >&2; return 0; }
  timeout "$limit" "$@"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import deepspeed" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
bounded 90 python3 -m pytest -q -p no:cacheprovider tests/bert_core/test_gpu.py tests/pretrain/test_gpu_step.py 2>&1 | tail -15

engine() {  # the trainer's step: build_engine + train_micro_batch, tokens/s and MFU from its metrics line
  local profile=$1; shift
  bounded 200 python3 -m bench.pretrain_engine --preset base --seq 128 --batch 512 --steps 20 --warmup 3 "$@" $EXTRA \
    2>>"$profile" | tee -a "$OUT/engine_stdout.txt" | grep --line-buffered '^{' | tee -a "$OUT/gpu_check.jsonl"
}
mirror() {  # the plain-torch mirror of that step
  local limit=$1; shift
  bounded "$limit" python3 -m bench.pretrain_gpu --preset base --seq 128 --batch 512 --steps 20 --warmup 3 "$@" $EXTRA \
    2>>"$OUT/stderr.txt" | tee -a "$OUT/gpu_check.jsonl"
}
have_ds=$(python3 -c "import deepspeed" 2>/dev/null && echo 1)
[ -z "$have_ds" ] && echo "no deepspeed here: run bench/gpu_wheels.sh and carry .whl for the trainer's own step" >&2
if [ -n "$have_ds" ]; then
  engine "$OUT/profile_engine.txt" --profile 3                    # ZeRO-1 (the trainer's default), bf16, compiled
  sed -n '/== top kernels/,$p' "$OUT/profile_engine.txt" | head -40
fi
mirror 120                                                        # bf16 weights + fp32 master, as DeepSpeed bf16
[ -n "$have_ds" ] && engine "$OUT/stderr.txt" --zero-stage 0      # DeepSpeed's BF16_Optimizer, no ZeRO buckets
mirror 120 --no-padding-mask                                      # full rows without a mask: SDPA's flash kernel
mirror 120 --precision autocast                                   # the earlier figure's setting (43.4% on H100)
mirror 240 --compile-mode max-autotune-no-cudagraphs              # autotuned GEMMs with fused epilogues (slow compile)
