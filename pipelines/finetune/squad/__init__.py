"""SQuAD v1.1 / v2.0: official JSON (``read``) -> windowed features (``features``) -> span training
(``task``) -> n-best decoding and EM/F1 (``decode``); settings in ``params``.

Each question and context is packed as ``[CLS] question [SEP] context-window [SEP]``: the question
cut to ``max_query_length`` tokens, the context split into windows whose starts are ``doc_stride``
tokens apart. Answer character spans become token spans through the tokenizer's character offsets
into the original context, and predicted spans go back through the same offsets, so the answer
text is cut from the original string (case, accents and spacing intact). Decoding keeps the
``n_best_size`` best starts and ends per window, spans of at most ``max_answer_length`` tokens,
only starts in the window where that token has the most context (as the reference implementation
does); for v2.0 the null answer wins when ``null_score - best_span_score`` exceeds a threshold tuned
on dev, as the official evaluation script's ``best_f1_thresh``.

Bad input (answers whose text is not at ``answer_start``, empty contexts or questions) is counted in
the read report; training skips such questions, evaluation still scores them against their gold text.
"""
from __future__ import annotations

from pipelines.finetune.squad.decode import apply_null_threshold, best_null_threshold, decode_predictions, evaluate_squad
from pipelines.finetune.squad.features import Features, build_features
from pipelines.finetune.squad.params import SquadParams
from pipelines.finetune.squad.read import SquadExample, read_squad
from pipelines.finetune.squad.task import finetune_squad, predict_logits

__all__ = ["Features", "SquadExample", "SquadParams", "apply_null_threshold", "best_null_threshold", "build_features",
           "decode_predictions", "evaluate_squad", "finetune_squad", "predict_logits", "read_squad"]
