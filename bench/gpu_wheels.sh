#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with what the GPU machine lacks for bench.pretrain_engine: DeepSpeed (PyPI has
# only its sdist, so it is built here as a pure-Python wheel, no ops prebuilt) and its needs missing from
# that machine's image (pydantic and its parts, hjson). Run here, before the device call; the call names
# `.whl` in carry, and bench/gpu_check.sh installs them to /tmp/site when the folder is there.
#
#   bash bench/gpu_wheels.sh        # about 20 s with a warm pip cache; ~5 MB
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  typing-extensions==4.16.0 hjson==3.1.0
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary=:all: deepspeed==0.19.8 -d "$tmp"
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation "$tmp"/deepspeed-0.19.8.tar.gz -w .whl
rm -rf "$tmp"
ls -la .whl
