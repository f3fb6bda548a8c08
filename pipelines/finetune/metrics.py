"""Evaluation metrics exactly as GLUE and SQuAD define them; pure python + numpy (no torch, no ray).

GLUE: Matthews correlation (CoLA), Pearson and Spearman (STS-B), F1 of the positive class and
accuracy (MRPC, QQP), accuracy (everything else), and the GLUE score: the mean over tasks of each
task's score, where a task with two metrics contributes their mean and MNLI the mean of matched and
mismatched (this reproduces the leaderboard's 80.5 for BERT-large from its per-task numbers).

CoNLL: entity precision/recall/F1, micro and per type, by conlleval.pl's chunk rules (IOB1 and IOB2).

SQuAD: exact match and token F1 after the official answer normalisation (lower-case, drop
punctuation, drop the articles a/an/the, collapse whitespace), taking the best over the gold
answers; for v2.0 an unanswerable question has the single gold answer "" and a prediction scores
only if it is "" too. ``squad_v2_scores`` is the whole official v2.0 output (HasAns/NoAns, the
no-answer probability threshold, best_exact/best_f1 and their thresholds).
"""
from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Mapping, Sequence

import numpy as np


# --- classification / regression --------------------------------------------------------------
def accuracy(predictions: Sequence, labels: Sequence) -> float:
    p, y = np.asarray(predictions), np.asarray(labels)
    _check_same_length(p, y)
    return float((p == y).mean()) if len(y) else 0.0


def f1_binary(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (sklearn's ``f1_score`` default); 0 when there is no true positive."""
    p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
    _check_same_length(p, y)
    tp = float(np.sum(p & y))
    if tp == 0:
        return 0.0
    precision, recall = tp / float(np.sum(p)), tp / float(np.sum(y))
    return 2 * precision * recall / (precision + recall)


def matthews_corrcoef(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Multi-class MCC (Gorodkin's R_K), equal to the binary phi coefficient for two classes; 0 if undefined."""
    p, y = np.asarray(predictions), np.asarray(labels)
    _check_same_length(p, y)
    classes = np.union1d(p, y)
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(conf, (np.searchsorted(classes, y), np.searchsorted(classes, p)), 1)
    t, q = conf.sum(axis=1), conf.sum(axis=0)  # true and predicted counts per class
    n, correct = conf.sum(), np.trace(conf)
    cov_pt = correct * n - t @ q
    cov_pp, cov_tt = n * n - q @ q, n * n - t @ t
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_pt / np.sqrt(cov_pp * cov_tt))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_same_length(a, b)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (scipy's ``rankdata(method='average')``)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    boundaries = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])
    ranks = np.empty(len(x), dtype=np.float64)
    for lo, hi in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0  # mean of 1-based ranks lo+1 .. hi
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_same_length(a, b)
    return pearson(_average_ranks(a), _average_ranks(b))


def _check_same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"predictions have shape {a.shape} but labels {b.shape}")


# name -> function(predictions, labels); what a task spec's ``metrics`` may name.
METRICS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Iterable[str], predictions: Sequence, labels: Sequence) -> dict[str, float]:
    out = {}
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        out[name] = METRICS[name](predictions, labels)
    return out


def task_score(evals: Sequence[Mapping[str, float]], names: Sequence[str]) -> float:
    """A task's single number for the GLUE score: the mean of its metrics (MRPC: F1 and accuracy),
    averaged over its dev sets (MNLI: matched and mismatched)."""
    if not evals:
        raise ValueError("no evaluation results to score")
    return float(np.mean([np.mean([e[n] for n in names]) for e in evals]))


def glue_score(task_scores: Mapping[str, float]) -> float:
    """Unweighted mean of per-task scores, as the GLUE leaderboard's macro-average (MNLI counts once)."""
    if not task_scores:
        raise ValueError("no task scores to average")
    return float(np.mean(list(task_scores.values())))


# The BERT paper's Table 1 "Average": one number per dev set, the metric the paper reports for the task
# (F1 for QQP and MRPC, Spearman for STS-B, Matthews for CoLA, accuracy elsewhere), MNLI-m and MNLI-mm as
# two entries, and WNLI left out ("we exclude the problematic WNLI set"). Reproduces its 79.6 (BERT-base)
# and 82.1 (BERT-large) from the table's own numbers.
PAPER_GLUE_METRICS = {"mnli": "accuracy", "qqp": "f1", "qnli": "accuracy", "sst2": "accuracy", "cola": "matthews",
                      "stsb": "spearman", "mrpc": "f1", "rte": "accuracy"}


def paper_glue_average(dev: Mapping[str, Mapping[str, Mapping[str, float]]]) -> tuple[float | None, list[str]]:
    """The paper's average (percent) over the dev sets present, and their names in order.

    ``dev``: task -> eval name (``mnli-m``) -> metric -> fraction, as a task result's ``dev``."""
    entries = {ev: 100 * m[PAPER_GLUE_METRICS[task]] for task, evals in dev.items() if task in PAPER_GLUE_METRICS
               for ev, m in evals.items()}
    return (float(np.mean(list(entries.values()))) if entries else None), sorted(entries)


# --- SQuAD (the official evaluate-v1.1.py / evaluate-v2.0.py) ---------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    if not pred_tokens or not gold_tokens:  # v2.0: both empty scores 1, one empty scores 0
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], gold_answers: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 in percent over every question in ``gold_answers``.

    A question with no gold answer (v2.0 unanswerable) is scored against ``[""]``; a question with
    no prediction scores 0 (the official script warns and does the same).
    """
    em = f1 = 0.0
    has_ans_em = has_ans_n = no_ans_em = no_ans_n = 0.0
    for qid, golds in gold_answers.items():
        golds = [g for g in golds if normalize_answer(g)] or [""]
        pred = predictions.get(qid)
        e = max(squad_exact_match(pred, g) for g in golds) if pred is not None else 0.0
        f = max(squad_f1(pred, g) for g in golds) if pred is not None else 0.0
        em, f1 = em + e, f1 + f
        if golds == [""]:
            no_ans_em, no_ans_n = no_ans_em + e, no_ans_n + 1
        else:
            has_ans_em, has_ans_n = has_ans_em + e, has_ans_n + 1
    n = max(len(gold_answers), 1)
    out = {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "total": float(len(gold_answers))}
    if no_ans_n:
        out.update(HasAns_exact=100.0 * has_ans_em / max(has_ans_n, 1), NoAns_exact=100.0 * no_ans_em / no_ans_n)
    return out


def squad_v2_scores(gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                    na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0,
                    all_null_thresh: float = 0.0) -> dict[str, float]:
    """The official ``evaluate-v2.0.py`` output, same keys and arithmetic (percentages).

    ``gold_answers``: qid -> its answer texts, in the dev file's order ([] for an unanswerable question).
    ``na_probs``: qid -> no-answer probability (or any score where higher means "no answer"); a
    question is answered "" when its score exceeds ``na_prob_thresh``. Without ``na_probs`` every
    score is 0 and the best-threshold keys are left out, as the official script does without ``-n``.
    ``best_exact``/``best_f1`` are the best scores over all thresholds and the thresholds reaching them;
    when predicting "" everywhere is best the official script reports threshold 0.0 (``all_null_thresh``).
    A question without a prediction is left out of the scores (the official script skips it too).
    """
    has_ans = {q: bool(golds) for q, golds in gold_answers.items()}
    exact_raw, f1_raw = {}, {}
    for qid, golds in gold_answers.items():
        if qid not in predictions:
            continue
        golds = [g for g in golds if normalize_answer(g)] or [""]
        exact_raw[qid] = max(squad_exact_match(predictions[qid], g) for g in golds)
        f1_raw[qid] = max(squad_f1(predictions[qid], g) for g in golds)
    probs = dict(na_probs) if na_probs is not None else {q: 0.0 for q in predictions}
    exact = _null_when_above(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = _null_when_above(f1_raw, probs, has_ans, na_prob_thresh)
    out = _percentages(exact, f1, list(exact))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, h in has_ans.items() if h is wanted and q in exact]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _percentages(exact, f1, qids).items()})
    if na_probs is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            best, thresh = _best_threshold(predictions, raw, probs, has_ans, all_null_thresh)
            out[f"best_{name}"], out[f"best_{name}_thresh"] = best, thresh
    return out


def _null_when_above(scores: Mapping[str, float], na_probs: Mapping[str, float], has_ans: Mapping[str, bool],
                     thresh: float) -> dict[str, float]:
    """A question whose no-answer score exceeds ``thresh`` is answered "": right exactly when it has no answer."""
    return {q: float(not has_ans[q]) if na_probs[q] > thresh else s for q, s in scores.items()}


def _percentages(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict[str, float]:
    n = len(qids)
    return {"exact": 100.0 * sum(exact[q] for q in qids) / n if n else 0.0,
            "f1": 100.0 * sum(f1[q] for q in qids) / n if n else 0.0, "total": n}


def _best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                    has_ans: Mapping[str, bool], all_null_thresh: float) -> tuple[float, float]:
    """Start from "" everywhere, then answer the questions in order of rising no-answer score; the
    best running total and the score at which it was reached (ties: the first, as the official script)."""
    current = best = float(sum(not has_ans[q] for q in scores))
    thresh = all_null_thresh
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            current += scores[qid]
        elif predictions[qid]:  # the raw text: a blank but non-empty answer counts as an answer here
            current -= 1
        if current > best:
            best, thresh = current, na_probs[qid]
    return (100.0 * best / len(scores) if scores else 0.0), thresh


# --- CoNLL entity scores (conlleval.pl) ---------------------------------------------------------
def _split_tag(tag: str) -> tuple[str, str]:
    """conlleval's ``/^([^-]*)-(.*)$/``: ``B-PER`` -> (``B``, ``PER``); ``O`` -> (``O``, ``""``)."""
    prefix, dash, kind = tag.partition("-")
    return (prefix, kind) if dash else (tag, "")


def _chunk_ends(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval.pl's endOfChunk, for the B/I/O tags of IOB1 and IOB2 (its E/[/] cases never arise)."""
    if prev in ("B", "I") and tag in ("B", "O"):
        return True
    return prev not in ("O", ".") and prev_type != type_


def _chunk_starts(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval.pl's startOfChunk for B/I/O: a B always opens a chunk, an I after O opens one too, and
    so does any tag whose type differs from the previous tag's."""
    if tag == "B" or (prev == "O" and tag == "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def conll_chunks(sentences: Sequence[Sequence[str]]) -> list[tuple[str, int, int]]:
    """(type, first, last) of every chunk; token positions count across sentences, and each sentence
    break acts as an ``O`` (conlleval's boundary line), so no chunk spans two sentences."""
    chunks, pos = [], 0
    for tags in sentences:
        prev, prev_type, begin = "O", "", 0
        for i, tag in enumerate(list(tags) + ["O"]):
            t, kind = _split_tag(tag)
            if _chunk_ends(prev, t, prev_type, kind):
                chunks.append((prev_type, pos + begin, pos + i - 1))
            if _chunk_starts(prev, t, prev_type, kind):
                begin = i
            prev, prev_type = t, kind
        pos += len(tags)
    return chunks


def _prf(correct: int, found_pred: int, found_gold: int) -> dict[str, float]:
    p = correct / found_pred if found_pred else 0.0
    r = correct / found_gold if found_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def conll_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision/recall/F1 (fractions) and the same per type, as conlleval.pl.

    A predicted chunk is correct when a gold chunk has the same type, first and last token. The IOB1
    and IOB2 forms of a tagging give the same chunks, so one function scores both.
    """
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise ValueError("gold and predicted tags differ in sentences or tokens")
    g, p = set(conll_chunks(gold)), set(conll_chunks(predicted))
    correct = g & p
    out = {**_prf(len(correct), len(p), len(g)), "num_gold": len(g), "num_predicted": len(p),
           "num_correct": len(correct), "per_type": {}}
    for kind in sorted({c[0] for c in g | p}):
        n_c, n_p, n_g = (sum(c[0] == kind for c in s) for s in (correct, p, g))
        out["per_type"][kind] = {**_prf(n_c, n_p, n_g), "num_gold": n_g}
    return out
