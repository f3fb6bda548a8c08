"""Multiple choice, the BERT paper's SWAG recipe: ``spec`` (how a file reads: context, choices, label)
-> ``read`` (JSONL / CSV rows -> ``ChoiceExample``, bad rows counted) -> ``task`` (each (context, choice)
pair encoded ``[CLS] context [SEP] choice [SEP]``, a vector scoring each pair's pooled [CLS], softmax
across the question's choices; accuracy on dev).

Known by name: ``swag`` (the official csv: sent1 vs sent2 + ending0..3), ``commonsenseqa`` (question
stem vs its 5 answer texts, answerKey A-E) and ``copa`` (premise + "What was the cause/effect?" vs 2
choices); any other file is read by its own ``ChoiceSpec``.
"""
from __future__ import annotations

from pipelines.finetune.multiple_choice.read import ChoiceExample, read_choices
from pipelines.finetune.multiple_choice.spec import MC_TASKS, ChoiceSpec
from pipelines.finetune.multiple_choice.task import finetune_multiple_choice

__all__ = ["MC_TASKS", "ChoiceExample", "ChoiceSpec", "finetune_multiple_choice", "read_choices"]
