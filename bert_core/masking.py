"""Masked-LM corruption (Devlin et al., 2019, section 3.1 and appendix A.1).

``mask_tokens`` is pure: the same ids and seed give the same output. Of the candidate positions
(not special, not padding) it selects ``round(mlm_probability * n)`` (at least one, at most
``max_predictions_per_seq``); of those, 80% become ``[MASK]``, 10% a random token, 10% stay.
With a ``continuation`` table (True for ``##`` pieces) whole words are selected together.
"""
from __future__ import annotations

from typing import Sequence

import torch

IGNORE_INDEX = -100


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def continuation_table(vocab: Sequence[str]) -> torch.Tensor:
    """(V,) bool: True for WordPiece continuation pieces (``##x``), which join the word before."""
    return torch.tensor([tok.startswith("##") for tok in vocab], dtype=torch.bool)


def _num_to_predict(num_candidates: torch.Tensor, mlm_probability: float, max_predictions: int | None) -> torch.Tensor:
    k = torch.round(num_candidates.double() * mlm_probability).long().clamp(min=1)
    k = torch.minimum(k, num_candidates)
    if max_predictions is not None:
        k = k.clamp(max=max_predictions)
    return k


def _select_tokens(candidates: torch.Tensor, k: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per row, a uniformly random set of exactly k[row] candidate positions: (B, T) bool."""
    scores = torch.rand(candidates.shape, generator=g)
    return _lowest_k(scores, candidates, k)


def _lowest_k(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the k[row] candidates with the lowest scores (ties: the earlier position)."""
    scores = scores.masked_fill(~candidates, 2.0)  # never chosen before a candidate
    ranks = scores.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return (ranks < k[:, None]) & candidates


def _select_words(ids: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor,
                  continuation: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Whole-word selection: words in random order, added while the total stays <= k."""
    B, T = ids.shape
    is_cont = continuation[ids] & candidates
    selected = torch.zeros_like(candidates)
    for b in range(B):
        pos = candidates[b].nonzero().flatten().tolist()
        words: list[list[int]] = []
        for p in pos:
            if words and is_cont[b, p] and words[-1][-1] == p - 1:
                words[-1].append(p)
            else:
                words.append([p])
        order = torch.randperm(len(words), generator=g).tolist()
        budget = int(k[b])
        for w in order:
            if budget <= 0:
                break
            if len(words[w]) <= budget:
                selected[b, words[w]] = True
                budget -= len(words[w])
    return selected


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids: Sequence[int],
    seed: int | torch.Generator,
    pad_token_id: int = 0,
    mlm_probability: float = 0.15,
    max_predictions_per_seq: int | None = None,
    continuation: torch.Tensor | None = None,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(inputs, labels)`` for a (B, T) or (T,) id tensor.

    ``labels`` hold the original id at selected positions and -100 elsewhere. Pass ``continuation``
    (see ``continuation_table``) for whole-word masking.
    """
    _check_rates(mlm_probability, mask_prob, random_prob)
    squeeze = input_ids.dim() == 1
    ids = input_ids.long().cpu()
    ids = ids[None] if squeeze else ids
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be (T,) or (B, T), got shape {tuple(input_ids.shape)}")
    g = _generator(seed)
    candidates = _candidates(ids, vocab_size, special_token_ids, pad_token_id)
    k = _num_to_predict(candidates.sum(dim=1), mlm_probability, max_predictions_per_seq)
    if continuation is not None:
        selected = _select_words(ids, candidates, k, continuation, g)
    else:
        selected = _select_tokens(candidates, k, g)
    u = torch.rand(ids.shape, generator=g)
    random_ids = torch.randint(vocab_size, ids.shape, generator=g)
    inputs, labels = _corrupt(ids, selected, u, random_ids, mask_token_id, mask_prob, random_prob)
    inputs = inputs.to(input_ids.dtype)
    if squeeze:
        return inputs[0], labels[0]
    return inputs, labels


def mask_rows(
    rows: Sequence[torch.Tensor],
    seeds: Sequence[int],
    length: int,
    *,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids: Sequence[int],
    pad_token_id: int = 0,
    mlm_probability: float = 0.15,
    max_predictions_per_seq: int | None = None,
    continuation: torch.Tensor | None = None,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask_tokens`` of each 1-D row with its own seed, padded to ``length``: (B, length) inputs
    (``pad_token_id`` after each row) and labels (-100 after each row).

    Row i equals ``mask_tokens(rows[i], seed=seeds[i], ...)``: each row's generator makes the same
    draws in the same order (selection scores, 80/10/10 draw, random ids); everything else runs once
    over the padded batch instead of ~20 small ops per row (6.7x faster at 512 x 128, bench.masking).
    Whole-word masking (``continuation``) calls ``mask_tokens`` row by row.
    """
    _check_rates(mlm_probability, mask_prob, random_prob)
    if len(rows) != len(seeds):
        raise ValueError(f"{len(rows)} rows but {len(seeds)} seeds")
    B = len(rows)
    lengths = [len(row) for row in rows]
    for i, n in enumerate(lengths):
        if n > length:
            raise ValueError(f"row {i} has {n} tokens, more than the padded length {length}")
    if continuation is not None:
        inputs = torch.full((B, length), pad_token_id, dtype=torch.long)
        labels = torch.full((B, length), IGNORE_INDEX, dtype=torch.long)
        for i, (row, seed) in enumerate(zip(rows, seeds)):
            inputs[i, :lengths[i]], labels[i, :lengths[i]] = mask_tokens(
                torch.as_tensor(row, dtype=torch.long), vocab_size=vocab_size, mask_token_id=mask_token_id,
                special_token_ids=special_token_ids, seed=seed, pad_token_id=pad_token_id,
                mlm_probability=mlm_probability, max_predictions_per_seq=max_predictions_per_seq,
                continuation=continuation, mask_prob=mask_prob, random_prob=random_prob)
        return inputs, labels
    # Each row's draws go to its stretch of flat buffers (1-D slices are cheap), then one scatter pads them.
    total = sum(lengths)
    flat_scores, flat_u = torch.empty(total), torch.empty(total)
    flat_random = torch.empty(total, dtype=torch.long)
    start = 0
    for n, seed in zip(lengths, seeds):
        g = _generator(seed)
        torch.rand(n, generator=g, out=flat_scores[start:start + n])  # mask_tokens' draws, in its order
        torch.rand(n, generator=g, out=flat_u[start:start + n])
        torch.randint(vocab_size, (n,), generator=g, out=flat_random[start:start + n])
        start += n
    real = torch.arange(length) < torch.tensor(lengths, dtype=torch.long)[:, None]  # (B, length), row-major
    ids = torch.full((B, length), pad_token_id, dtype=torch.long)
    if B:
        ids[real] = torch.cat([torch.as_tensor(row, dtype=torch.long) for row in rows])
    scores = torch.full((B, length), 2.0)
    scores[real] = flat_scores
    u = torch.ones(B, length)
    u[real] = flat_u
    random_ids = torch.zeros(B, length, dtype=torch.long)
    random_ids[real] = flat_random
    candidates = _candidates(ids, vocab_size, special_token_ids, pad_token_id)  # padding is never one
    k = _num_to_predict(candidates.sum(dim=1), mlm_probability, max_predictions_per_seq)
    selected = _lowest_k(scores, candidates, k)
    return _corrupt(ids, selected, u, random_ids, mask_token_id, mask_prob, random_prob)


def _check_rates(mlm_probability: float, mask_prob: float, random_prob: float) -> None:
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
        raise ValueError(f"mask_prob {mask_prob} + random_prob {random_prob} must lie in [0, 1]")


def _candidates(ids: torch.Tensor, vocab_size: int, special_token_ids: Sequence[int], pad_token_id: int) -> torch.Tensor:
    """(B, T) bool: positions that may be selected (not special, not padding); checks the id range."""
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[torch.tensor(sorted(set(special_token_ids) | {pad_token_id}), dtype=torch.long)] = True
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"input_ids outside the vocabulary [0, {vocab_size})")
    return ~special[ids]


def _corrupt(ids: torch.Tensor, selected: torch.Tensor, u: torch.Tensor, random_ids: torch.Tensor,
             mask_token_id: int, mask_prob: float, random_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels at the selected positions; of those, [MASK] where u < mask_prob, a random id where
    u falls in the next random_prob, the original token otherwise."""
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    inputs = ids.clone()
    inputs[selected & (u < mask_prob)] = mask_token_id
    use_random = selected & (u >= mask_prob) & (u < mask_prob + random_prob)
    inputs[use_random] = random_ids[use_random]
    return inputs, labels
