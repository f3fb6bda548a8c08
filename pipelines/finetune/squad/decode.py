"""Span logits -> answers -> EM/F1: the ``n_best_size`` best starts and ends per window, spans of at
most ``max_answer_length`` tokens starting where the window gives the most context, the answer text
cut from the original context through the offsets; for v2.0 the null answer wins when
``null_score - best_span_score`` exceeds a threshold tuned on dev (the official script's ``best_f1_thresh``).
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


def best_null_threshold(texts: dict[str, str], null_diffs: dict[str, float], golds: dict[str, list[str]],
                        ) -> tuple[float, float]:
    """Threshold maximising dev F1 (the official script's best_f1_thresh) and that F1 in percent.

    Predicting null for every question with diff > t: sweep t over the observed diffs from high to low.
    """
    gold_norm = {q: [g for g in gs if metrics.normalize_answer(g)] or [""] for q, gs in golds.items()}
    span_f1 = {q: max(metrics.squad_f1(texts[q], g) for g in gold_norm[q]) for q in golds}
    null_f1 = {q: float(gold_norm[q] == [""]) for q in golds}
    order = sorted(golds, key=lambda q: null_diffs[q])
    # Start with everything predicted null (threshold below every diff), then un-null from the lowest diff up.
    current = sum(null_f1.values())
    best, best_t = current, (null_diffs[order[0]] - 1.0) if order else 0.0
    for q in order:
        current += span_f1[q] - null_f1[q]
        if current > best:
            best, best_t = current, null_diffs[q]
    return float(best_t), 100.0 * best / max(len(golds), 1)


def evaluate_squad(examples, feats, start_logits, end_logits, params: SquadParams) -> tuple[dict, dict[str, str], dict]:
    """Metrics, final predictions (qid -> text) and null-odds; v2.0 tunes the null threshold here."""
    texts, diffs = decode_predictions(examples, feats, start_logits, end_logits, params)
    golds = {ex.qid: [t for t, _ in ex.answers] if not ex.is_impossible else [] for ex in examples}
    result: dict = {}
    if params.version == "v2.0":
        threshold, best_f1 = best_null_threshold(texts, diffs, golds)
        if params.null_threshold is not None:
            threshold = params.null_threshold
        # A threshold tuned on the dev set it is scored on flatters that score: threshold 0 is reported too.
        at_zero = metrics.squad_scores(apply_null_threshold(texts, diffs, 0.0), golds)
        texts = apply_null_threshold(texts, diffs, threshold)
        result.update(null_threshold=threshold, best_f1=best_f1,
                      null_threshold_tuned_on_dev=float(params.null_threshold is None),
                      exact_match_at_threshold_0=at_zero["exact_match"], f1_at_threshold_0=at_zero["f1"])
    result.update(metrics.squad_scores(texts, golds))
    return result, texts, {q: float(d) if np.isfinite(d) else 1e9 for q, d in diffs.items()}
