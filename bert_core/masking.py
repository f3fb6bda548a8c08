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
    scores[~candidates] = 2.0  # never chosen before a candidate
    ranks = scores.argsort(dim=1).argsort(dim=1)
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
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
        raise ValueError(f"mask_prob {mask_prob} + random_prob {random_prob} must lie in [0, 1]")
    squeeze = input_ids.dim() == 1
    ids = input_ids.long().cpu()
    ids = ids[None] if squeeze else ids
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be (T,) or (B, T), got shape {tuple(input_ids.shape)}")
    g = _generator(seed)
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[torch.tensor(sorted(set(special_token_ids) | {pad_token_id}), dtype=torch.long)] = True
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"input_ids outside the vocabulary [0, {vocab_size})")
    candidates = ~special[ids]
    k = _num_to_predict(candidates.sum(dim=1), mlm_probability, max_predictions_per_seq)
    if continuation is not None:
        selected = _select_words(ids, candidates, k, continuation, g)
    else:
        selected = _select_tokens(candidates, k, g)

    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    u = torch.rand(ids.shape, generator=g)
    random_ids = torch.randint(vocab_size, ids.shape, generator=g)
    inputs = ids.clone()
    inputs[selected & (u < mask_prob)] = mask_token_id
    use_random = selected & (u >= mask_prob) & (u < mask_prob + random_prob)
    inputs[use_random] = random_ids[use_random]
    inputs = inputs.to(input_ids.dtype)
    if squeeze:
        return inputs[0], labels[0]
    return inputs, labels
