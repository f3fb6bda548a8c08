"""The trainer's per-micro-batch work on a CUDA GPU never makes the host wait for the device: the
pinned non-blocking copies, the model with static MLM slots, backward, and the metrics window's sums.
A wait would stop the CPU from queuing the next kernels while the GPU runs (torch's sync debug mode
turns each wait into an error)."""
import numpy as np
import pytest
import torch

from bert_core import BertConfig, BertForPreTraining
from pipelines.devices import to_device
from pipelines.pretrain.engine import Window

pytestmark = pytest.mark.gpu


def _arrays(rows: int = 8, seq: int = 32, vocab: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, (rows, seq), dtype=np.int64)
    labels = np.where(rng.random((rows, seq)) < 0.15, ids, -100).astype(np.int64)
    mask = np.ones((rows, seq), dtype=np.int64)
    mask[1, 20:] = 0
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask, "mlm_labels": labels,
            "nsp_labels": rng.integers(0, 2, rows, dtype=np.int64)}


def test_micro_batch_and_metrics_window_never_wait_for_the_gpu():
    device = torch.device("cuda")
    model = BertForPreTraining(BertConfig.preset("mini", vocab_size=1000)).to(device)
    arrays = _arrays()

    def micro_batch(window: Window):
        batch = {k: to_device(torch.from_numpy(v), device) for k, v in arrays.items()}
        out = model(**batch, num_predictions=8)
        out.loss.backward()
        window.add(out, batch)

    window = Window()
    micro_batch(window)  # first use: cuBLAS handles, allocator growth
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        micro_batch(window)
        micro_batch(window)
        with pytest.raises(RuntimeError):  # the check bites: a Python number copied to the GPU waits
            torch.tensor(1.0, device=device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    sums = window.sums.tolist()
    assert sums[5] == 3 * 8 and sums[6] == 3 * 8 * 32 and sums[7] == 3 * (8 * 32 - 12) and sums[8] == 3
