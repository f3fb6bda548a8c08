import pyarrow as pa

from pipelines.schemas import SENTENCES, TOKENIZED
from pipelines.stages import tokenize


def test_core_matches_the_tokenizer_and_drops_empty(bert_tokenizer):
    table = pa.table({"doc_id": ["a", "b", "c"],
                      "sentences": [["Hello world.", "\x00\x01"], ["Tokenization is fun!"], ["\u200b"]]},
                     schema=SENTENCES)
    out = tokenize.core(table, bert_tokenizer)
    assert out.schema == TOKENIZED
    enc = bert_tokenizer.tokenizer
    assert out.to_pylist() == [
        {"doc_id": "a", "sentence_ids": [enc.encode("Hello world.", add_special_tokens=False).ids]},
        {"doc_id": "b", "sentence_ids": [enc.encode("Tokenization is fun!", add_special_tokens=False).ids]},
    ]
    assert bert_tokenizer.decode(out.column("sentence_ids")[1][0].as_py()) == "tokenization is fun!"


TRICKY = ["", " ", "  two  spaces ", "tab\tinside\tchunks", "line\nbreak", "Ünïcödé àccents ÅNGSTRÖM", "ΣΊΣΥΦΟΣ ΟΔΟΣ",
          "中文字符 mixed中文", "emoji 🙂 and ﬁ ligature", "x" * 150 + " " + "y" * 99, "##hash ## pieces",
          "zero\u200bwidth", "nbsp\u00a0joined", "ideographic\u3000space", "ctrl\x01char", "e\u0301 combining",
          "don't stop-believin'...", "3.14 1,000 $5 #tag @user", "[MASK] [CLS] [SEP] literal"]


def test_chunk_cache_gives_the_tokenizers_ids(bert_tokenizer, demo_files):
    from pipelines.stages.read import read_file, ReadConfig
    from pipelines.stages.split import split_sentences

    docs = next(read_file(demo_files[0], ReadConfig()))
    sentences = [s for text in docs.column("text").to_pylist()[:400] for s in split_sentences(text)] + TRICKY
    expected = [e.ids for e in bert_tokenizer.tokenizer.encode_batch(sentences, add_special_tokens=False)]
    distinct = len({c for s in sentences for c in s.split(" ")})
    for max_entries in (100, 10**6):  # a cache emptied on every call, and one that fills once
        encoder = tokenize.SentenceEncoder(bert_tokenizer, max_entries=max_entries)
        assert encoder.by_chunk
        for _ in range(2):  # cold, then warm cache
            values, lengths = encoder.encode(sentences)
            assert lengths.tolist() == [len(e) for e in expected]
            assert values.tolist() == [i for e in expected for i in e]
        assert len(encoder.cache) == distinct
    values, lengths = encoder.encode([])
    assert values.tolist() == [] and lengths.tolist() == []


def test_trained_tokenizer_is_cached_by_chunk_too(tmp_path):
    from bert_core import WordPieceTokenizer

    texts = ["The interpreter reads the module.", "Modules define functions and classes."] * 50
    trained = WordPieceTokenizer.train(texts, vocab_size=200)
    encoder = tokenize.SentenceEncoder(trained)
    assert encoder.by_chunk
    values, lengths = encoder.encode(texts[:2] + TRICKY)
    expected = trained.encode_batch(texts[:2] + TRICKY)
    assert values.tolist() == [i for e in expected for i in e] and lengths.tolist() == [len(e) for e in expected]
