"""BERT's learning-rate schedule, written out: linear warm-up from 0, then linear decay to 0."""
from __future__ import annotations


def warmup_linear_decay(learning_rate: float, warmup_steps: int, num_steps: int, step: int) -> float:
    """The rate optimizer step ``step`` (counted from 1) applies."""
    it = step - 1
    if it < warmup_steps:
        return learning_rate * (it / warmup_steps)
    return learning_rate * max(0.0, (num_steps - it) / (num_steps - warmup_steps))


def assert_lr_schedule(curve: list[dict], phase, num_steps: int) -> None:
    """Every step of a metrics curve logged once, each at the rate the schedule gives it (read from the
    engine's param groups by the train loop)."""
    import pytest

    assert [m["step"] for m in curve] == list(range(1, num_steps + 1))
    got = [m["learning_rate"] for m in curve]
    expected = [warmup_linear_decay(phase.learning_rate, phase.warmup_steps, phase.num_steps, m["step"]) for m in curve]
    assert got == pytest.approx(expected, rel=1e-12, abs=0), got
    assert max(got) == phase.learning_rate
