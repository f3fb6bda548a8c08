"""SQuAD's own settings (windowing, decoding, files); sequence length, lr and epochs are HyperParams."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SquadParams:
    """Windowing and decoding for SQuAD; sequence length, lr, epochs come from HyperParams (use 384 tokens)."""

    version: Literal["v1.1", "v2.0"] = "v1.1"
    doc_stride: int = 128
    """Tokens between the starts of consecutive context windows."""
    max_query_length: int = 64
    """Question tokens kept (the rest is cut)."""
    n_best_size: int = 20
    """Start and end candidates kept per window when decoding."""
    max_answer_length: int = 30
    """Longest answer span, in tokens."""
    null_threshold: float | None = None
    """v2.0: predict no answer when null_score - best_span_score > this; None = tune on dev."""
    train_file: str = ""
    """Default ``train-{version}.json``."""
    dev_file: str = ""
    """Default ``dev-{version}.json``."""

    def __post_init__(self) -> None:
        if self.doc_stride < 1 or self.max_query_length < 1 or self.n_best_size < 1 or self.max_answer_length < 1:
            raise ValueError(f"SquadParams: strides, lengths and sizes must be positive: {self}")
