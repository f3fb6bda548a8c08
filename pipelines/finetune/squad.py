"""SQuAD v1.1 / v2.0: official JSON -> windowed features -> span training -> n-best decoding -> EM/F1.

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

import collections
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from pipelines import storage
from pipelines.finetune import metrics
from pipelines.finetune.glue import MAX_BAD_SAMPLES, BadRowError, ReadReport


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


@dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    """(text, answer_start) gold answers; empty for an unanswerable v2.0 question."""
    is_impossible: bool = False
    answer_ok: bool = True
    """False when some answer's text is not at its answer_start in the context."""


def read_squad(uri: str, on_bad_row: Literal["count", "raise"] = "count") -> tuple[list[SquadExample], ReadReport]:
    """Questions of an official SQuAD JSON file (v1.1 or v2.0); bad ones are counted in the report."""
    data = storage.read_json(uri)
    if not isinstance(data, dict) or "data" not in data:
        raise BadRowError(f"{uri}: not a SQuAD file (no top-level 'data')")
    report, examples = ReadReport(uri), []

    def bad(reason: str, where: str) -> None:
        if on_bad_row == "raise":
            raise BadRowError(f"{uri}: {where}: {reason}")
        report.bad[reason] += 1
        if len(report.samples) < MAX_BAD_SAMPLES:
            report.samples.append(f"{uri}: {where}: {reason}")

    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context", "")
            for qa in para.get("qas", []):
                report.num_rows += 1
                where = f"data[{a}].paragraphs[{p}] question {qa.get('id', '?')}"
                if not context.strip():
                    bad("empty context", where)
                    continue
                if not qa.get("question", "").strip():
                    bad("empty question", where)
                    continue
                answers = [(x["text"], int(x["answer_start"])) for x in qa.get("answers", [])]
                impossible = bool(qa.get("is_impossible", False))
                ok = all(context[s:s + len(t)] == t for t, s in answers)
                if not ok:
                    bad("answer text not at answer_start", where)
                if not impossible and not answers:
                    bad("answerable question without answers", where)
                    continue
                examples.append(SquadExample(qa["id"], qa["question"], context, answers, impossible, ok))
    report.num_kept = len(examples)
    return examples, report


# --- features ------------------------------------------------------------------------------------
@dataclass
class Features:
    """Fixed-length windows; ``offsets[f][t]`` is the (start, end) char span of context token t, or None."""

    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)
    max_context: list[list[bool]] = field(default_factory=list)
    start_positions: list[int] = field(default_factory=list)
    end_positions: list[int] = field(default_factory=list)


def _window_starts(num_tokens: int, window: int, stride: int) -> list[int]:
    starts, s = [], 0
    while True:
        starts.append(s)
        if s + window >= num_tokens:
            return starts
        s += stride


def _token_span(offsets: list[tuple[int, int]], lo: int, hi: int, char_start: int, char_end: int) -> tuple[int, int] | None:
    """Context-token span [start, end] (inclusive, indices into ``offsets``) covering chars [char_start, char_end)."""
    if not (offsets[lo][0] <= char_start and offsets[hi - 1][1] >= char_end):
        return None
    start = next(i for i in range(lo, hi) if offsets[i][1] > char_start)
    end = next(i for i in range(hi - 1, lo - 1, -1) if offsets[i][0] < char_end)
    return (start, end) if end >= start else None


def build_features(examples: list[SquadExample], tok, params: SquadParams, max_seq_length: int,
                   training: bool) -> Features:
    """Windows for every example; in training, labels are the answer's token span or [CLS] (0, 0)."""
    feats = Features()
    context_cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
    for ex_i, ex in enumerate(examples):
        if training and not ex.answer_ok:
            continue
        q_ids = tok.tokenizer.encode(ex.question, add_special_tokens=False).ids[:params.max_query_length]
        if ex.context not in context_cache:
            enc = tok.tokenizer.encode(ex.context, add_special_tokens=False)
            context_cache[ex.context] = (enc.ids, enc.offsets)
        c_ids, c_offsets = context_cache[ex.context]
        window = max_seq_length - len(q_ids) - 3
        if window < 1:
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for context after the question")
        starts = _window_starts(len(c_ids), window, params.doc_stride)
        answer = None
        if training and ex.answers and not ex.is_impossible:
            text, s = ex.answers[0]
            answer = (s, s + len(text))
        prefix = [tok.cls_id] + q_ids + [tok.sep_id]
        for w, lo in enumerate(starts):
            hi = min(lo + window, len(c_ids))
            feats.input_ids.append(prefix + c_ids[lo:hi] + [tok.sep_id])
            feats.token_type_ids.append([0] * len(prefix) + [1] * (hi - lo + 1))
            feats.example_index.append(ex_i)
            pad = [None] * len(prefix)
            feats.offsets.append(pad + list(c_offsets[lo:hi]) + [None])
            feats.max_context.append([False] * len(prefix) + [_is_max_context(starts, window, len(c_ids), w, t)
                                                             for t in range(lo, hi)] + [False])
            span = _token_span(c_offsets, lo, hi, *answer) if answer and hi > lo else None
            s_pos, e_pos = (span[0] - lo + len(prefix), span[1] - lo + len(prefix)) if span else (0, 0)
            feats.start_positions.append(s_pos)
            feats.end_positions.append(e_pos)
    return feats


def _is_max_context(starts: list[int], window: int, num_tokens: int, w: int, t: int) -> bool:
    """True if window ``w`` gives token ``t`` the most context, score = min(left, right) + 0.01 * length."""
    best, best_w = None, None
    for i, lo in enumerate(starts):
        hi = min(lo + window, num_tokens)
        if lo <= t < hi:
            score = min(t - lo, hi - 1 - t) + 0.01 * (hi - lo)
            if best is None or score > best:
                best, best_w = score, i
    return best_w == w


# --- decoding -------------------------------------------------------------------------------------
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


# --- training -------------------------------------------------------------------------------------
def _features_as_encoded(feats: Features):
    from pipelines.finetune.train import Encoded

    labels = np.stack([np.array(feats.start_positions), np.array(feats.end_positions)], axis=1)
    return Encoded(feats.input_ids, feats.token_type_ids, labels, [str(i) for i in feats.example_index])


def _qa_batch(enc, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    from pipelines.finetune.train import pad_batch

    batch = pad_batch(enc, rows, pad_id)
    labels = batch.pop("labels")
    batch["start_positions"], batch["end_positions"] = labels[:, 0], labels[:, 1]
    return batch


@torch.no_grad()
def predict_logits(model, enc, hp, pad_id: int, device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    model.eval()
    starts, ends = [None] * len(enc.input_ids), [None] * len(enc.input_ids)
    for lo in range(0, len(enc.input_ids), hp.eval_batch_size):
        rows = list(range(lo, min(lo + hp.eval_batch_size, len(enc.input_ids))))
        batch = _qa_batch(enc, rows, pad_id)
        batch.pop("start_positions"), batch.pop("end_positions")
        _, s, e = model(**{k: v.to(device) for k, v in batch.items()})
        for r, i in enumerate(rows):
            n = len(enc.input_ids[i])
            starts[i], ends[i] = s[r, :n].float().cpu().numpy(), e[r, :n].float().cpu().numpy()
    return starts, ends


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


def finetune_squad(params: SquadParams, data_uri: str, checkpoint_dir: str, hp, output_uri: str | None = None,
                   on_bad_row: Literal["count", "raise"] = "count") -> dict:
    """Fine-tune BertForQuestionAnswering on train, evaluate on dev after each epoch; writes
    ``predictions.json`` (qid -> answer, the official format), ``null_odds.json`` (v2.0), ``metrics.json``."""
    from bert_core import load_pretrained
    from pipelines.finetune.train import check_vocabulary, load_tokenizer, pick_device, train_epochs

    train_uri = storage.join(data_uri, params.train_file or f"train-{params.version}.json")
    dev_uri = storage.join(data_uri, params.dev_file or f"dev-{params.version}.json")
    train_ex, train_rep = read_squad(train_uri, on_bad_row)
    dev_ex, dev_rep = read_squad(dev_uri, on_bad_row)
    if hp.max_train_examples:
        train_ex = train_ex[:hp.max_train_examples]
    if hp.max_eval_examples:
        dev_ex = dev_ex[:hp.max_eval_examples]
    device, tok = pick_device(), load_tokenizer(checkpoint_dir)
    train_enc = _features_as_encoded(build_features(train_ex, tok, params, hp.max_seq_length, training=True))
    dev_feats = build_features(dev_ex, tok, params, hp.max_seq_length, training=False)
    dev_enc = _features_as_encoded(dev_feats)
    torch.manual_seed(hp.seed)
    model = load_pretrained(checkpoint_dir, "question_answering").to(device)
    check_vocabulary(tok, model, checkpoint_dir)
    history, final = [], {}

    def evaluate(epoch: int, train_loss: float, seconds: float, cpu_seconds: float) -> None:
        s, e = predict_logits(model, dev_enc, hp, tok.pad_id, device)
        final["metrics"], final["texts"], final["odds"] = evaluate_squad(dev_ex, dev_feats, s, e, params)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_seconds": seconds, "dev": final["metrics"]})

    name = f"squad_{params.version}"
    train_epochs(model, len(train_enc.input_ids), lambda rows: _qa_batch(train_enc, rows, tok.pad_id), hp, device,
                 evaluate, label=name)
    result = {"task": name, "hyper_params": asdict(hp), "squad_params": asdict(params),
              "num_train_features": len(train_enc.input_ids), "dev": {name: final["metrics"]},
              "score": final["metrics"]["f1"], "epochs": history,
              "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in history])),
              "data_reports": [train_rep.to_dict(), dev_rep.to_dict()], "device": str(device)}
    if output_uri is not None:
        storage.write_json_atomic(storage.join(output_uri, "predictions.json"), final["texts"])
        if params.version == "v2.0":
            storage.write_json_atomic(storage.join(output_uri, "null_odds.json"), final["odds"])
        storage.write_json_atomic(storage.join(output_uri, "metrics.json"), result)
    return result
