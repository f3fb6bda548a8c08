"""Fixtures for the stage tests: the shipped demo corpus (real English prose) and its documents,
sentences and token ids computed in-process with the stages' pure cores (no Ray)."""
from __future__ import annotations

import glob
import gzip
import os

import pyarrow as pa
import pytest

import pipelines

DEMO_DIR = os.path.join(os.path.dirname(pipelines.__file__), "demo", "corpus")


@pytest.fixture(scope="session")
def demo_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(DEMO_DIR, "*.txt.gz")))
    assert files, f"the shipped demo corpus is missing from {DEMO_DIR}"
    return files


@pytest.fixture(scope="session")
def bert_tokenizer(minilm_dir):
    from bert_core.tokenizer import WordPieceTokenizer

    return WordPieceTokenizer.from_vocab_file(os.path.join(minilm_dir, "vocab.txt"))


@pytest.fixture(scope="session")
def demo_tokenized(demo_files, bert_tokenizer) -> pa.Table:
    """TOKENIZED rows of the whole demo corpus (read -> clean -> split -> tokenize cores)."""
    from pipelines.stages import clean, read, split, tokenize

    tables = [t for f in demo_files for t in read.read_file(f, read.ReadConfig())]
    docs = pa.concat_tables(tables)
    cleaned = clean.core(docs, clean.CleanConfig())
    import pyarrow.compute as pc

    kept = cleaned.filter(pc.equal(cleaned.column("drop_reason"), "")).select(["doc_id", "text"])
    return tokenize.core(split.core(kept, split.SplitConfig()), bert_tokenizer)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> str:
    """The first ~400 documents of the shipped demo corpus (real prose)."""
    out = tmp_path_factory.mktemp("corpus") / "docs.txt"
    corpus = os.path.join(os.path.dirname(pipelines.__file__), "demo", "corpus", "python-000.txt.gz")
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        docs = f.read().split("\n\n")[:400]
    out.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return str(out)
