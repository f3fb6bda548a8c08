"""Span logits -> answers -> EM/F1: the ``n_best_size`` best starts and ends per window, spans of at
most ``max_answer_length`` tokens starting where the window gives the most context, the answer text
cut from the original context through the offsets; for v2.0 the null answer wins when
``s_null - best_span_score`` exceeds a threshold tuned on dev (the official script's ``best_f1_thresh``),
where ``s_null = start[CLS] + end[CLS]``, the lowest over the question's windows (the reference
implementation's choice), and the span score is the best over all windows.
"""
from __future__ import annotations

import collections

import numpy as np

from pipelines.finetune import metrics
from pipelines.finetune.squad.features import Features
from pipelines.finetune.squad.params import SquadParams
from pipelines.finetune.squad.read import SquadExample


def decode_predictions(examples: list[SquadExample], feats: Features, start_logits: list[np.ndarray],
                       end_logits: list[np.ndarray], params: SquadParams) -> tuple[dict[str, str], dict[str, float]]:
    """Best span text per question and, per question, null_score - best_span_score (for v2.0)."""
    by_example = collections.defaultdict(list)
    for f, ex_i in enumerate(feats.example_index):
        by_example[ex_i].append(f)
    texts, null_diffs = {}, {}
    for ex_i, ex in enumerate(examples):
        best_text, best_score, null_score = "", -np.inf, np.inf
        for f in by_example.get(ex_i, []):
            s_log, e_log, offsets = start_logits[f], end_logits[f], feats.offsets[f]
            null_score = min(null_score, float(s_log[0] + e_log[0]))
            for s in np.argsort(s_log)[::-1][:params.n_best_size]:
                if offsets[s] is None or not feats.max_context[f][s]:
                    continue
                for e in np.argsort(e_log)[::-1][:params.n_best_size]:
                    if offsets[e] is None or e < s or e - s + 1 > params.max_answer_length:
                        continue
                    score = float(s_log[s] + e_log[e])
                    if score > best_score:
                        best_score, best_text = score, ex.context[offsets[s][0]:offsets[e][1]]
        texts[ex.qid] = best_text
        null_diffs[ex.qid] = null_score - best_score if np.isfinite(best_score) else np.inf
    return texts, null_diffs


def apply_null_threshold(texts: dict[str, str], null_diffs: dict[str, float], threshold: float) -> dict[str, str]:
    return {q: ("" if null_diffs[q] > threshold else t) for q, t in texts.items()}


def _all_null_threshold(null_diffs: dict[str, float]) -> float:
    """A threshold below every finite diff: "no answer" everywhere (the official script says 0.0 there)."""
    finite = [d for d in null_diffs.values() if np.isfinite(d)]
    return min(finite) - 1.0 if finite else 0.0


def best_null_threshold(texts: dict[str, str], null_diffs: dict[str, float], golds: dict[str, list[str]],
                        ) -> tuple[float, float]:
    """Threshold maximising dev F1 (the official script's best_f1_thresh, with null_score -
    best_span_score as the no-answer probability) and that F1 in percent."""
    scores = metrics.squad_v2_scores(golds, texts, null_diffs, all_null_thresh=_all_null_threshold(null_diffs))
    return float(scores["best_f1_thresh"]), scores["best_f1"]


def evaluate_squad(examples, feats, start_logits, end_logits, params: SquadParams) -> tuple[dict, dict[str, str], dict]:
    """Metrics, final predictions (qid -> text) and null-odds; v2.0 tunes the null threshold here.

    v2.0's metrics are the official script's (``metrics.squad_v2_scores``, its ``exact`` named
    ``exact_match`` as in v1.1) at the threshold used, with ``null_score - best_span_score`` as the
    no-answer probability: HasAns/NoAns, best_exact/best_f1 and their thresholds, and the scores at 0."""
    texts, diffs = decode_predictions(examples, feats, start_logits, end_logits, params)
    golds = {ex.qid: [t for t, _ in ex.answers] if not ex.is_impossible else [] for ex in examples}
    if params.version != "v2.0":
        return metrics.squad_scores(texts, golds), texts, {}
    all_null = _all_null_threshold(diffs)
    tuned = metrics.squad_v2_scores(golds, texts, diffs, all_null_thresh=all_null)
    threshold = tuned["best_f1_thresh"] if params.null_threshold is None else params.null_threshold
    scores = metrics.squad_v2_scores(golds, texts, diffs, na_prob_thresh=threshold, all_null_thresh=all_null)
    # A threshold tuned on the dev set it is scored on flatters that score: threshold 0 is reported too.
    at_zero = metrics.squad_v2_scores(golds, texts, diffs, na_prob_thresh=0.0, all_null_thresh=all_null)
    result = {"exact_match": scores.pop("exact"), **scores, "null_threshold": float(threshold),
              "null_threshold_tuned_on_dev": float(params.null_threshold is None),
              "exact_match_at_threshold_0": at_zero["exact"], "f1_at_threshold_0": at_zero["f1"]}
    odds = {q: float(d) if np.isfinite(d) else 1e9 for q, d in diffs.items()}
    return result, apply_null_threshold(texts, diffs, threshold), odds
