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
