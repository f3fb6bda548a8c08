"""Length-binned micro-batches (``inputs.binned_order``, ``engine.fit_to_bin``) and the MLM-only objective:
the order keeps every row and the deal, a batch computed at its bin's width gives the padded batch's loss
and gradients, and the configs that cannot work are refused naming the key."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bert_core import BertConfig, BertForPreTraining
from bert_core.masking import mask_rows
from pipelines.pretrain.config import MaskingConfig, PhaseConfig, PretrainConfig
from pipelines.pretrain.engine import fit_to_bin, static_predictions
from pipelines.pretrain.inputs import binned_order
from pipelines.typed_config import ConfigError, from_dict

BINS = (32, 64, 96, 128)


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 129, size=n)


def _width(rows: np.ndarray, lengths: np.ndarray) -> int:
    return BINS[int(np.searchsorted(BINS, lengths[rows].max()))]


def test_binned_order_keeps_the_rows_and_the_edges_and_groups_micro_batches_by_bin():
    lengths, order = _lengths(1000), np.random.default_rng(1).permutation(1000)
    micro, start = 16, 5  # the window starts at epoch position 5: its first 11 rows end a micro-batch
    got = binned_order(order, lengths, start, micro, BINS, seed=3, epoch=0, index=2)
    assert sorted(got.tolist()) == list(range(1000))
    lo = (-start) % micro
    hi = lo + (1000 - lo) // micro * micro
    assert (got[:lo] == order[:lo]).all() and (got[hi:] == order[hi:]).all()
    batches = [got[a:a + micro] for a in range(lo, hi, micro)]
    mixed = [b for b in batches if len({int(np.searchsorted(BINS, n)) for n in lengths[b]}) > 1]
    assert len(mixed) <= len(BINS) - 1  # only the leftovers of each bin mix, into at most bins - 1 batches
    assert (got == binned_order(order, lengths, start, micro, BINS, seed=3, epoch=0, index=2)).all()
    assert not (got == binned_order(order, lengths, start, micro, BINS, seed=3, epoch=1, index=2)).all()
    padded = 128 * len(batches) * micro
    binned = sum(_width(b, lengths) for b in batches) * micro
    own_bins = sum(BINS[int(np.searchsorted(BINS, n))] for n in lengths[got[lo:hi]])  # each row at its own bound
    assert own_bins <= binned <= own_bins + len(mixed) * micro * (128 - 32)
    real = int(lengths[got[lo:hi]].sum())
    assert real / binned > 0.8 > 0.6 > real / padded  # uniform lengths in 5..128: 52% real padded


def test_a_window_shorter_than_a_micro_batch_keeps_its_order():
    order = np.arange(10)
    assert (binned_order(order, _lengths(10), 3, 16, BINS, 0, 0, 0) == order).all()


def test_fit_to_bin_cuts_the_columns_past_the_longest_rows_bin():
    mask = np.zeros((2, 128), np.int64)
    mask[0, :40], mask[1, :70] = 1, 1
    arrays = {"input_ids": mask * 7, "attention_mask": mask, "nsp_labels": np.array([0, 1])}
    cut = fit_to_bin(arrays, BINS)
    assert cut["input_ids"].shape == (2, 96) and cut["attention_mask"].shape == (2, 96)
    assert (cut["nsp_labels"] == [0, 1]).all()
    assert fit_to_bin(arrays, ()) is arrays  # no bins: padded to max_seq_length, as before
    mask[1, :] = 1
    assert fit_to_bin({"attention_mask": mask}, BINS)["attention_mask"].shape == (2, 128)


def _batch(seed: int = 0, rows: int = 6, width: int = 128) -> dict[str, torch.Tensor]:
    """Rows of 20..60 real tokens, masked as training masks them, padded to ``width``."""
    g = np.random.default_rng(seed)
    lengths = g.integers(20, 61, size=rows)
    ids = [torch.tensor([2] + g.integers(5, 300, size=n - 2).tolist() + [3]) for n in lengths]
    masked, labels = mask_rows(ids, list(range(rows)), width, vocab_size=300, mask_token_id=4,
                               special_token_ids=[0, 1, 2, 3, 4], pad_token_id=0, max_predictions_per_seq=20)
    types = torch.zeros(rows, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        types[i, n // 2:n] = 1
    return {"input_ids": masked, "token_type_ids": types, "mlm_labels": labels,
            "attention_mask": (torch.arange(width) < torch.tensor(lengths)[:, None]).long(),
            "nsp_labels": torch.tensor(g.integers(0, 2, size=rows))}


@pytest.mark.parametrize("objective", ["nsp", "mlm"])
def test_binned_batch_gives_the_padded_batchs_loss_and_gradients(objective):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=300, hidden_dropout_prob=0.0,
                                                 attention_probs_dropout_prob=0.0))
    padded = _batch()
    binned = {k: torch.from_numpy(v) for k, v in fit_to_bin({k: v.numpy() for k, v in padded.items()}, BINS).items()}
    assert binned["input_ids"].shape[1] == 64 < padded["input_ids"].shape[1]
    results = []
    for batch in (padded, binned):
        model.zero_grad()
        if objective == "mlm":
            batch = {k: v for k, v in batch.items() if k != "nsp_labels"}
        out = model(**batch)
        out.loss.backward()
        results.append((out.loss.item(), out.nsp_loss.item(), [p.grad.clone() for p in model.parameters()]))
    (loss_p, nsp_p, grads_p), (loss_b, nsp_b, grads_b) = results
    assert loss_b == pytest.approx(loss_p, rel=1e-6, abs=1e-6)
    assert (nsp_p == nsp_b == 0.0) if objective == "mlm" else nsp_p > 0.1
    for a, b in zip(grads_p, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_static_prediction_slots_scale_with_the_width():
    cfg = from_dict(PretrainConfig, {"use_gpu": True, "phases": [
        {"max_seq_length": 128, "global_batch_size": 64, "micro_batch_size": 32, "length_bins": [32, 64],
         "max_predictions_per_seq": 20}]})
    phase = cfg.phases[0]
    assert phase.bins == (32, 64, 128)
    assert [static_predictions(cfg, phase, w) for w in (32, 64, 128)] == [5, 10, 20]  # ceil(0.15 w), capped at 20
    thirty = dataclasses.replace(phase, mlm_probability=0.3)
    assert cfg.mlm_probability(thirty) == 0.3 and static_predictions(cfg, thirty, 32) == 10
    cpu = dataclasses.replace(cfg, use_gpu=False)
    assert static_predictions(cpu, phase, 32) is None  # eager on CPU: exactly the masked positions


@pytest.mark.parametrize("phase, message", [
    ({"max_seq_length": 128, "length_bins": [64, 256]}, r"phase.length_bins: bin bound 256 must lie in \(0, max_seq_length 128\]"),
    ({"max_seq_length": 128, "length_bins": [64, 64]}, r"phase.length_bins \[64, 64\] must be strictly increasing"),
    ({"mlm_probability": 1.0}, r"phase.mlm_probability must lie in \(0, 1\), got 1.0"),
    ({"mlm_probability": 0.0}, r"phase.mlm_probability must lie in \(0, 1\), got 0.0"),
])
def test_impossible_phase_settings_name_the_key(phase, message):
    with pytest.raises(ConfigError, match=message):
        PhaseConfig(**phase)


def test_masking_probability_outside_0_1_names_the_key():
    with pytest.raises(ConfigError, match=r"masking.mlm_probability must lie in \(0, 1\), got 1.5"):
        MaskingConfig(mlm_probability=1.5)
    with pytest.raises(ConfigError, match="objective"):
        from_dict(PretrainConfig, {"objective": "nsp+sop"})
