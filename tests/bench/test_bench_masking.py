"""bench.masking: its CPU smoke run (the batched masking it times is checked against row by row)."""
from __future__ import annotations


def test_masking_benchmark_checks_batched_against_row_by_row():
    from bench.masking import main

    result = main(["--batch", "8", "--seq", "32", "--repeats", "1"])
    assert result["identical_outputs"] and result["mask_batch_ms"] > 0
