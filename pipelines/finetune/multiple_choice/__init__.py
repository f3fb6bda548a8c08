"""Multiple choice, the BERT paper's SWAG recipe: ``spec`` (how a file reads: context, choices, label)
-> ``read`` (JSONL / CSV rows -> ``ChoiceExample``, bad rows counted) -> ``task`` (each (context, choice)
pair encoded ``[CLS] context [SEP] choice [SEP]``, a vector scoring each pair's pooled [CLS], softmax
across the question's choices; accuracy on dev).

Known by name: ``swag`` (the official csv: sent1 vs sent2 + ending0..3), ``commonsenseqa`` (question
stem vs its 5 answer texts, answerKey A-E) and ``copa`` (premise + "What was the cause/effect?" vs 2
choices); any other file is read by its own ``ChoiceSpec``.
"""
from __future__ import annotations

from pipelines.finetune import lazy_exports

_EXPORTS = {
    "ChoiceExample": "read",
    "read_choices": "read",
    "MC_TASKS": "spec",
    "ChoiceSpec": "spec",
    "finetune_multiple_choice": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
