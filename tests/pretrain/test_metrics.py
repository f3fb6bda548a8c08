"""FLOP count, MFU and the metrics writer (the GPU benchmarks' smoke runs: tests/bench/)."""
from __future__ import annotations


import pytest

from bert_core import BertConfig, BertForPreTraining
from pipelines.pretrain.metrics import (GpuPeak, MetricsWriter, encoder_matmul_params, flops_per_step, gpu_peak, mfu,
                                       mfu_metrics, peak_flops, read_metrics)


def test_encoder_matmul_params_match_the_model():
    config = BertConfig.preset("tiny", vocab_size=1000)
    model = BertForPreTraining(config)
    layer_params = sum(p.numel() for n, p in model.bert.layers.named_parameters() if "norm" not in n)
    assert encoder_matmul_params(config) == layer_params


def test_flops_per_step_is_6N_plus_attention_plus_heads():
    c = BertConfig.preset("base")
    B, T, masked = 256, 128, 256 * 20
    N = encoder_matmul_params(c)
    expected = (6 * N * B * T + 12 * c.num_hidden_layers * c.hidden_size * T * B * T
                + 6 * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size) * masked
                + 6 * (c.hidden_size ** 2 + 2 * c.hidden_size) * B)
    assert flops_per_step(c, B, T, masked) == pytest.approx(expected)
    # base at seq 128: about 0.55 GFLOP per token (6 x 85M encoder weights + attention + heads)
    assert 0.5e9 < flops_per_step(c, B, T, masked) / (B * T) < 0.6e9


@pytest.mark.parametrize("name, datasheet, measured", [
    ("NVIDIA H100 80GB HBM3", 989e12, 800e12), ("NVIDIA H200", 989e12, 800e12), ("NVIDIA H100 PCIe", 756e12, None),
    ("NVIDIA H100 NVL", 835e12, None), ("NVIDIA A100-SXM4-80GB", 312e12, None), ("NVIDIA L40S", 362e12, None),
    ("NVIDIA L40", 181e12, None), ("NVIDIA L4", 121e12, None), ("NVIDIA A10", 125e12, None),
])
def test_peak_by_gpu_name_is_the_datasheet_dense_bf16_figure(name, datasheet, measured):
    assert gpu_peak(name) == GpuPeak(datasheet, measured)
    assert peak_flops(name) == datasheet


def test_unknown_gpu_has_no_peak_unless_given():
    assert gpu_peak("Tesla V100-SXM2-16GB") is None and peak_flops("Tesla V100-SXM2-16GB") is None
    assert gpu_peak("Tesla V100-SXM2-16GB", 125e12) == GpuPeak(125e12, None)
    assert gpu_peak("NVIDIA H100 80GB HBM3", 900e12) == GpuPeak(900e12, 800e12)


def test_mfu():
    assert mfu(400e12, 1.0, 800e12) == 0.5
    assert mfu(1.0, 1.0, None) is None


def test_mfu_headline_is_against_the_datasheet_with_the_measured_matmul_beside():
    # The README's H200 figure: 45.9% of the measured 800 TFLOP/s is 37.1% of the datasheet's 989.
    achieved = 0.459 * 800e12
    got = mfu_metrics(achieved * 2.0, 2.0, gpu_peak("NVIDIA H200"))
    assert got == {"mfu": achieved / 989e12, "mfu_measured_matmul": achieved / 800e12}
    assert round(got["mfu"], 3) == 0.371 and round(0.434 * 800 / 989, 3) == 0.351
    assert mfu_metrics(1e12, 1.0, gpu_peak("NVIDIA A100-SXM4-80GB")) == {"mfu": 1e12 / 312e12}
    assert mfu_metrics(1e12, 1.0, None) == {}


def test_writer_appends_json_lines_and_tensorboard_events(tmp_path):
    writer = MetricsWriter(str(tmp_path))
    writer.write(1, {"mlm_loss": 7.0, "note": "x"})
    writer.write(2, {"mlm_loss": 6.5})
    writer.close()
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == [{"step": 1, "mlm_loss": 7.0, "note": "x"},
                                                              {"step": 2, "mlm_loss": 6.5}]
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
