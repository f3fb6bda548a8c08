"""mask_tokens: determinism, the 15% / 80-10-10 rates, specials never selected, whole words."""
import pytest
import torch

from bert_core import continuation_table, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
V = 1000


def _batch(B=64, T=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0] = CLS
    ids[:, 60] = SEP
    ids[:, 100] = SEP
    ids[:, 101:] = PAD
    return ids


def _mask(ids, seed, **kw):
    return mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=(PAD, UNK, CLS, SEP, MASK),
                       seed=seed, **kw)


def test_same_seed_same_output_and_different_seed_different_output():
    ids = _batch()
    a, la = _mask(ids, 7)
    b, lb = _mask(ids, 7)
    c, lc = _mask(ids, 8)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(la, lc)


def test_selection_and_replacement_rates_over_many_draws():
    ids = _batch()
    selected = masked = randomised = kept = 0
    for seed in range(20):
        inputs, labels = _mask(ids, seed)
        sel = labels != -100
        # 98 candidates per row -> round(14.7) = 15 selected, exactly.
        assert sel.sum(dim=1).tolist() == [15] * ids.shape[0]
        assert torch.equal(labels[sel], ids[sel])
        assert torch.equal(inputs[~sel], ids[~sel])
        selected += int(sel.sum())
        masked += int((inputs[sel] == MASK).sum())
        kept += int((inputs[sel] == ids[sel]).sum())
        randomised += int(((inputs[sel] != MASK) & (inputs[sel] != ids[sel])).sum())
    assert abs(masked / selected - 0.8) < 0.01
    assert abs(randomised / selected - 0.1) < 0.01  # a random draw equal to the original counts as kept
    assert abs(kept / selected - 0.1) < 0.01


def test_specials_and_padding_are_never_selected():
    ids = _batch()
    for seed in range(10):
        _, labels = _mask(ids, seed)
        sel = labels != -100
        assert not sel[:, 0].any() and not sel[:, 60].any() and not sel[:, 100:].any()


def test_max_predictions_caps_the_count_and_short_rows_get_one():
    ids = _batch(B=4)
    _, labels = _mask(ids, 0, max_predictions_per_seq=5)
    assert (labels != -100).sum(dim=1).tolist() == [5, 5, 5, 5]
    short = torch.tensor([CLS, 50, 51, SEP, PAD, PAD])
    inputs, labels = _mask(short, 0)
    assert (labels != -100).sum() == 1 and labels[0] == -100 and (labels[3:] == -100).all()


def test_whole_word_masking_selects_every_piece_of_a_word():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 500)] + \
            [f"##p{i}" for i in range(500, V)]
    cont = continuation_table(vocab)
    g = torch.Generator().manual_seed(1)
    starts = torch.randint(5, 500, (32, 64), generator=g)
    pieces = torch.randint(500, V, (32, 64), generator=g)
    ids = torch.where(torch.rand(32, 64, generator=g) < 0.4, pieces, starts)
    ids[:, 0] = CLS
    ids[:, 1] = 7  # a word start right after [CLS]
    ids[:, -1] = SEP
    for seed in range(5):
        _, labels = _mask(ids, seed, continuation=cont)
        sel = labels != -100
        for b in range(ids.shape[0]):
            for t in range(2, ids.shape[1] - 1):
                if cont[ids[b, t]] and not cont[ids[b, t - 1]] or (cont[ids[b, t]] and cont[ids[b, t - 1]]):
                    assert sel[b, t] == sel[b, t - 1], (b, t)  # a ## piece goes with what precedes it
        assert (sel.sum(dim=1) <= 10).all() and sel.sum() > 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _mask(torch.tensor([[CLS, V + 3, SEP]]), 0)
    with pytest.raises(ValueError, match="mlm_probability"):
        _mask(_batch(B=1), 0, mlm_probability=0.0)
    with pytest.raises(ValueError, match=r"input_ids must be \(T,\) or \(B, T\)"):
        _mask(torch.zeros(2, 2, 2, dtype=torch.long), 0)


@pytest.mark.parametrize("max_predictions, whole_word", [(None, False), (3, False), (20, False), (20, True)])
def test_mask_rows_is_mask_tokens_row_by_row_padded(max_predictions, whole_word):
    """The path the masking stage runs: each row exactly as mask_tokens masks it alone."""
    from bert_core.masking import mask_rows

    continuation = torch.arange(V) >= V // 2 if whole_word else None  # upper half of the ids: ##pieces

    g = torch.Generator().manual_seed(3)
    lengths = [0, 1, 3, 17, 64, 64, 40, 2]
    rows = [torch.randint(0, V, (n,), generator=g) for n in lengths]  # specials and padding ids inside too
    rows[2] = torch.tensor([CLS, SEP, SEP])  # no candidates at all
    seeds = [int(s) for s in torch.randint(0, 2**62, (len(rows),), generator=g)]
    inputs, labels = mask_rows(rows, seeds, 64, vocab_size=V, mask_token_id=MASK,
                               special_token_ids=(PAD, UNK, CLS, SEP, MASK), mlm_probability=0.3,
                               max_predictions_per_seq=max_predictions, continuation=continuation)
    assert inputs.shape == labels.shape == (len(rows), 64)
    for i, (row, seed) in enumerate(zip(rows, seeds)):
        alone_inputs, alone_labels = _mask(row, seed, mlm_probability=0.3, max_predictions_per_seq=max_predictions,
                                           continuation=continuation)
        n = len(row)
        assert torch.equal(inputs[i, :n], alone_inputs) and torch.equal(labels[i, :n], alone_labels), i
        assert (inputs[i, n:] == PAD).all() and (labels[i, n:] == -100).all()
    assert (labels != -100).sum() > 0


def test_mask_rows_refuses_rows_longer_than_the_padding_and_missing_seeds():
    from bert_core.masking import mask_rows

    kw = dict(vocab_size=V, mask_token_id=MASK, special_token_ids=(PAD, CLS, SEP, MASK))
    with pytest.raises(ValueError, match="row 1 has 9 tokens, more than the padded length 8"):
        mask_rows([torch.ones(3, dtype=torch.long), torch.ones(9, dtype=torch.long)], [1, 2], 8, **kw)
    with pytest.raises(ValueError, match="2 rows but 1 seeds"):
        mask_rows([torch.ones(3, dtype=torch.long)] * 2, [1], 8, **kw)
    inputs, labels = mask_rows([], [], 8, **kw)
    assert inputs.shape == labels.shape == (0, 8)
