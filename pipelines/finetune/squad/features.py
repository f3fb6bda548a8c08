"""Questions -> fixed-length windows ``[CLS] question [SEP] context-window [SEP]``: the question cut to
``max_query_length`` tokens, the context split into windows whose starts are ``doc_stride`` tokens
apart. Answer character spans become token spans through the tokenizer's character offsets into the
original context; each window also records which of its tokens it gives the most context.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.finetune.squad.params import SquadParams
from pipelines.finetune.squad.read import SquadExample


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
