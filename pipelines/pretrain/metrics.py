"""Training metrics: the FLOP count behind model FLOPs utilisation, and the rank-0 writer that appends
JSON lines and TensorBoard events (``tensorboard --logdir {metrics_dir}``).

FLOPs per step follow the usual dense-transformer count (Kaplan et al. 2020; PaLM appendix B):
``6 * N * tokens`` for the matmuls forward + backward, plus ``12 * L * H * T`` per token for the
attention scores and their weighted sum. N counts the encoder and pooler/NSP weights but not the
embedding tables (a lookup is no matmul); the tied MLM decoder runs on the masked positions only, so
it adds ``6 * H * V`` per predicted token.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from bert_core import BertConfig

DATASHEET_BF16_PEAKS = {"H100": 989e12, "H200": 989e12, "H100 PCIE": 756e12, "H100 NVL": 835e12,
                        "H200 NVL": 835e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12,
                        "A10": 125e12}
"""Datasheet dense (no 2:4 sparsity) bf16 tensor-core peak by GPU model, FLOP/s: the denominator of
the headline MFU, as PaLM (appendix B) and MosaicML report it. H100/H200 are the SXM parts; the PCIe
and NVL boards have fewer SMs or lower clocks, so they get their own, lower, figures."""

MEASURED_MATMUL_PEAKS = {"H100": 800e12, "H200": 800e12}
"""The dense bf16 matmul rate actually reached on lent H100/H200 SXM machines (an 8192^3 product on
random data ran at 769-798 TFLOP/s, under the datasheet's boost clock): the MFU against it is shown
beside the headline, as the share of what a GPU can really do."""


@dataclass(frozen=True)
class GpuPeak:
    """What one GPU model can do, FLOP/s."""

    datasheet: float
    measured_matmul: float | None = None


def gpu_peak(device_name: str, datasheet: float | None = None) -> GpuPeak | None:
    """The peaks of a ``torch.cuda.get_device_name()`` such as 'NVIDIA H100 80GB HBM3'; None for a GPU
    not in ``DATASHEET_BF16_PEAKS`` (then no MFU is logged rather than a wrong one). ``datasheet``
    (FLOP/s) replaces the table's figure, e.g. for a GPU it lacks."""
    words = [w for w in re.split(r"[\s\-_]+", device_name.upper()) if w]
    for model in words:
        if model in DATASHEET_BF16_PEAKS:
            board = next((f"{model} {w}" for w in words if f"{model} {w}" in DATASHEET_BF16_PEAKS), model)
            measured = MEASURED_MATMUL_PEAKS.get(model) if board == model else None
            return GpuPeak(datasheet or DATASHEET_BF16_PEAKS[board], measured)
    return GpuPeak(datasheet) if datasheet else None


def peak_flops(device_name: str) -> float | None:
    """The datasheet dense bf16 peak of a GPU (see ``gpu_peak``); None when unknown."""
    peak = gpu_peak(device_name)
    return peak.datasheet if peak else None


def encoder_matmul_params(config: BertConfig) -> int:
    """Weights that take part in a matmul for every token (embeddings and the decoder excluded)."""
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = (3 * H * H + 3 * H) + (H * H + H) + (H * I + I) + (I * H + H)  # QKV, proj, FFN in/out
    return L * per_layer


def flops_per_step(config: BertConfig, batch_size: int, seq_len: int, masked_tokens: int) -> float:
    """Model FLOPs (forward + backward) of one step over ``batch_size`` sequences of ``seq_len``."""
    H, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    tokens = batch_size * seq_len
    dense = 6.0 * encoder_matmul_params(config) * tokens
    attention = 12.0 * L * H * seq_len * tokens
    heads = 6.0 * (H * H + H * V) * masked_tokens + 6.0 * (H * H + 2 * H) * batch_size  # MLM + pooler/NSP
    return dense + attention + heads


def real_flops_per_step(config: BertConfig, lengths, masked_tokens: int) -> float:
    """``flops_per_step`` of the real tokens only: rows of ``lengths`` tokens each (padding not counted)."""
    H, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    lengths = [int(n) for n in lengths]
    dense = 6.0 * encoder_matmul_params(config) * sum(lengths)
    attention = 12.0 * L * H * sum(n * n for n in lengths)
    heads = 6.0 * (H * H + H * V) * masked_tokens + 6.0 * (H * H + 2 * H) * len(lengths)
    return dense + attention + heads


def mfu(flops: float, seconds: float, peak_flops_per_s: float | None) -> float | None:
    """Achieved / peak FLOP/s; None where no peak is known (CPU)."""
    if not peak_flops_per_s or seconds <= 0:
        return None
    return flops / seconds / peak_flops_per_s


def mfu_metrics(flops: float, seconds: float, peak: GpuPeak | None) -> dict[str, float]:
    """``mfu`` against the datasheet peak (the headline) and ``mfu_measured_matmul`` against the
    measured matmul rate where there is one; empty where no peak is known (CPU)."""
    if peak is None or seconds <= 0:
        return {}
    out = {"mfu": flops / seconds / peak.datasheet}
    if peak.measured_matmul:
        out["mfu_measured_matmul"] = flops / seconds / peak.measured_matmul
    return out


class MetricsWriter:
    """Appends one JSON object per line to ``{directory}/metrics.jsonl`` and the same scalars to
    TensorBoard event files in ``directory``. Use on rank 0 only."""

    def __init__(self, directory: str, tensorboard: bool = True):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, "metrics.jsonl")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only rank 0 needs it

            self._tb = SummaryWriter(log_dir=directory)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
