"""The wordpiece stage's training sample: spooled to local disk and read back whole, in order."""
from __future__ import annotations

import gzip
import os

from bert_core.tokenizer import WordPieceTokenizer
from pipelines.stages.wordpiece import SpooledTexts

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "pipelines", "demo", "corpus", "python-000.txt.gz")


def test_spooled_texts_read_back_every_text_in_order_as_often_as_asked(tmp_path):
    texts = ["plain", "", "line\nbreak and\ttab", "naïve café — 東京", "x" * 70_000, "\x00 nul"]
    spool = SpooledTexts(str(tmp_path / "s.bin"))
    spool.write(iter(texts))
    assert list(spool) == texts and list(spool) == texts
    assert iter(spool) is not spool  # re-iterable: the trainer does not copy it into a list


def test_training_from_the_spool_gives_the_vocabulary_of_a_list(tmp_path):
    with gzip.open(DEMO, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()][:4000]
    spool = SpooledTexts(str(tmp_path / "s.bin"))
    spool.write(iter(lines))
    from_list = WordPieceTokenizer.train(lines, vocab_size=1200)
    from_spool = WordPieceTokenizer.train(spool, vocab_size=1200)
    assert from_spool.vocab() == from_list.vocab() and 1000 < len(from_list.vocab()) <= 1200
