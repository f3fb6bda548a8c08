"""Our WordPiece tokenizer against transformers' slow reference BertTokenizer on real English text."""
import glob
import os

import pytest

from bert_core import WordPieceTokenizer

transformers = pytest.importorskip("transformers")

PY_DOCS = "/usr/share/doc/python3.11/html/_sources"


def _real_lines(limit=3000):
    """Real English prose: the Python 3.11 documentation sources (Debian package python3.11-doc)."""
    files = sorted(glob.glob(os.path.join(PY_DOCS, "tutorial", "*.rst.txt"))
                   + glob.glob(os.path.join(PY_DOCS, "faq", "*.rst.txt")))
    assert files, f"{PY_DOCS} is missing: install the Debian package python3.11-doc"
    lines = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            lines.extend(line.strip() for line in f if len(line.strip()) > 20)
    assert len(lines) >= limit
    return lines[:limit]


def test_ids_identical_to_transformers_slow_tokenizer(minilm_dir):
    vocab = os.path.join(minilm_dir, "vocab.txt")
    ours = WordPieceTokenizer.load(vocab)
    ref = transformers.BertTokenizer(vocab, do_lower_case=True)
    lines = _real_lines()
    mismatches = [line for line in lines
                  if ours.encode(line) != ref(line)["input_ids"]]
    assert mismatches == []
    pair = ours.encode(lines[0], lines[1])
    assert pair == ref(lines[0], lines[1])["input_ids"]


def test_cased_tokenizer_keeps_case_and_accents(minilm_dir):
    vocab = os.path.join(minilm_dir, "vocab.txt")
    assert WordPieceTokenizer.load(vocab).tokenize("Café") == ["cafe"]
    cased = WordPieceTokenizer.load(vocab, lowercase=False)
    assert cased.tokenize("Café") != ["cafe"]
    assert cased.tokenize("cafe") == ["cafe"]


def test_train_save_and_reload(tmp_path):
    text = ["the cat sat on the mat", "the dog sat on the log", "cats and dogs sat together"] * 20
    tok = WordPieceTokenizer.train(text, vocab_size=80, min_frequency=1)
    assert tok.vocab()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.save(str(tmp_path))
    again = WordPieceTokenizer.load(str(tmp_path / "vocab.txt"))
    from_json = WordPieceTokenizer.load(str(tmp_path / "tokenizer.json"))
    for line in text[:3]:
        assert again.encode(line) == tok.encode(line) == from_json.encode(line)
    assert tok.encode("the cat", "the dog")[0] == tok.cls_id


def _demo_corpus_lines() -> list[str]:
    import gzip

    import pipelines

    lines = []  # the shipped demo corpus
    for path in sorted(glob.glob(os.path.join(os.path.dirname(pipelines.__file__), "demo", "corpus", "*.txt.gz"))):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines.extend(line for line in f.read().splitlines() if line.strip())
    assert len(lines) > 10_000
    return lines


def test_training_is_deterministic():
    """tokenizers' own trainer gave different orders and pieces run to run on this corpus (its issue
    #1794: ##c ids in hash-map order break merge ties); here 3 runs give the same vocabulary."""
    lines = _demo_corpus_lines()
    runs = [WordPieceTokenizer.train(lines, vocab_size=3000).vocab() for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) == 3000 and runs[0][:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    once = WordPieceTokenizer.train(iter(lines), vocab_size=3000)  # a one-shot iterator is read twice too
    assert once.vocab() == runs[0]
    # the ##c pieces handed to the trainer up front are ordinary pieces, not special tokens
    assert "##s" in runs[0] and once.tokenize("class ##s") == ["class", "#", "#", "s"]


def test_training_alphabet_is_the_most_frequent_normalised_characters():
    from bert_core.tokenizer import _assemble, training_alphabet
    from tokenizers import models

    normalizer = _assemble(models.WordPiece(unk_token="[UNK]"), True, None).normalizer
    texts = ["Ééé aa\tb", "b\x00 CC c", "ddd"]  # é -> e (accent stripped), \x00 dropped, whitespace not counted
    assert training_alphabet(texts, normalizer, 10) == ["a", "b", "c", "d", "e"]
    assert training_alphabet(texts, normalizer, 2) == ["c", "d"]  # c: 3, d: 3, e: 3 -> ties by code point


def test_bad_vocab_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WordPieceTokenizer.load(str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        WordPieceTokenizer.load(str(empty))
    partial = tmp_path / "partial.txt"
    partial.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"lacks special token\(s\) \[CLS\], \[SEP\], \[MASK\]"):
        WordPieceTokenizer.load(str(partial))


def test_encode_pairs_truncates_longest_first_like_transformers(minilm_dir):
    vocab = os.path.join(minilm_dir, "vocab.txt")
    ours = WordPieceTokenizer.load(vocab)
    ref = transformers.BertTokenizer(vocab, do_lower_case=True)
    lines = _real_lines(40)
    pairs = [(lines[i], lines[i + 1]) for i in range(0, 40, 2)] + [(lines[0], None)]
    for (a, b), row in zip(pairs, ours.encode_pairs(pairs, 24)):
        expected = ref(a, b, truncation="longest_first", max_length=24, padding="max_length")
        assert row["input_ids"] == expected["input_ids"]
        assert row["token_type_ids"] == expected["token_type_ids"]
        assert row["attention_mask"] == expected["attention_mask"]


def test_tokenizer_json_carries_its_casing_and_refuses_a_contradicting_one(tmp_path):
    """A tokenizer.json's normaliser is its casing: lowercase=None keeps it, a contradiction raises
    (it used to be ignored silently); a vocab.txt takes what it is given, lowercase by default."""
    lines = _real_lines(400)
    cased = WordPieceTokenizer.train(lines, vocab_size=600, min_frequency=2, lowercase=False)
    cased.save(str(tmp_path))
    assert (cased.lowercase, cased.strip_accents) == (False, None)
    again = WordPieceTokenizer.load(str(tmp_path / "tokenizer.json"))
    assert again.lowercase is False and WordPieceTokenizer.load(str(tmp_path), lowercase=False).lowercase is False
    with pytest.raises(ValueError, match="keeps case.*lowercase=True was asked for"):
        WordPieceTokenizer.load(str(tmp_path / "tokenizer.json"), lowercase=True)
    assert WordPieceTokenizer.load(str(tmp_path / "vocab.txt")).lowercase is True
    assert WordPieceTokenizer.load(str(tmp_path / "vocab.txt"), lowercase=False).lowercase is False
