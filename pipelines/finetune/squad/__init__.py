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
on dev, as the official evaluation script's ``best_f1_thresh``, and the scores are that script's
(``metrics.squad_v2_scores``: HasAns/NoAns, best_exact/best_f1 with their thresholds). A file of the
other version than the task's is refused before training (``read.check_version``), naming the field.

Bad input (answers whose text is not at ``answer_start``, empty contexts or questions) is counted in
the read report; training skips such questions, evaluation still scores them against their gold text.
"""
from __future__ import annotations

from pipelines.finetune import lazy_exports

_EXPORTS = {
    "apply_null_threshold": "decode",
    "best_null_threshold": "decode",
    "decode_predictions": "decode",
    "evaluate_squad": "decode",
    "Features": "features",
    "build_features": "features",
    "SquadParams": "params",
    "SquadExample": "read",
    "read_squad": "read",
    "finetune_squad": "task",
    "predict_logits": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
