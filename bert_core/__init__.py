"""bert_core: BERT in pure torch (model, heads, masking, tokenizer, checkpoint interop).

Imports torch, safetensors and tokenizers only: never ray, deepspeed, smart_open or torch.distributed.
The names below load their module on first use (PEP 562), so ``bert_core.tokenizer`` alone (what the
data stages' workers need) does not import torch: that was ~1 s and ~150 MB in every tokenize worker.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BertConfig": "config", "PRESETS": "config",
    "BertModel": "model", "BertForPreTraining": "model", "BertForSequenceClassification": "model",
    "BertForTokenClassification": "model", "BertForQuestionAnswering": "model",
    "PreTrainingOutput": "model", "count_parameters": "model",
    "mask_tokens": "masking", "continuation_table": "masking", "IGNORE_INDEX": "masking",
    "WordPieceTokenizer": "tokenizer", "SPECIAL_TOKENS": "tokenizer",
    "load_pretrained": "checkpoint", "save_pretrained": "checkpoint", "load_hf_state_dict": "checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bert_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bert_core.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
