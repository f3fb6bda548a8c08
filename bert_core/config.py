"""BertConfig: the typed, validated description of a BERT architecture, with the paper's presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    """Rows of the word-embedding table (and of the tied MLM decoder)."""
    hidden_size: int = 768
    """H: width of every token vector."""
    num_hidden_layers: int = 12
    """L: number of encoder layers."""
    num_attention_heads: int = 12
    """A: heads per attention layer; must divide hidden_size."""
    intermediate_size: int = 3072
    """Width of the feed-forward layer (4H in the paper)."""
    max_position_embeddings: int = 512
    """Learned positions; the longest sequence the model accepts."""
    type_vocab_size: int = 2
    """Segment ids (A=0, B=1)."""
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id {self.pad_token_id} is outside the vocabulary")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "BertConfig":
        """One of tiny, mini, small, medium, base, large; fields can be overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown BERT preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        fields = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden)
        fields.update(overrides)
        return cls(**fields)

    # --- Hugging Face config.json interop -------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(model_type="bert", architectures=["BertForPreTraining"], hidden_act="gelu",
                 position_embedding_type="absolute")
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "BertConfig":
        if d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only hidden_act 'gelu' is supported, checkpoint has {d['hidden_act']!r}")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# name: (L, H, A), as in the paper and Turc et al. (2019) for the small ones.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}
