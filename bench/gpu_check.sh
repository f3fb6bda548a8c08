#!/usr/bin/env bash
# The device check run on a lent GPU (torch there, no ray/deepspeed): GPU tests, then bf16 `base`
# training-step throughput and MFU for bert_core (eager and compiled) and transformers.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/bert_core/test_gpu.py 2>&1 | tail -3
python3 -m bench.model --device cuda --dtype bf16 --presets base --batch 256 --steps 10 --warmup 3 "$@"
python3 -m bench.model --device cuda --dtype bf16 --presets base --batch 256 --steps 10 --warmup 3 --impls bert_core --static "$@"
python3 -m bench.model --device cuda --dtype bf16 --presets base --batch 256 --steps 10 --warmup 3 --compile --static "$@"
