"""Fixtures for the stage tests (the demo corpus's documents, sentences and token ids are in
tests/conftest.py, shared with the pretraining tests)."""
from __future__ import annotations

import gzip
import os

import pytest

import pipelines


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> str:
    """The first ~400 documents of the shipped demo corpus (real prose)."""
    out = tmp_path_factory.mktemp("corpus") / "docs.txt"
    corpus = os.path.join(os.path.dirname(pipelines.__file__), "demo", "corpus", "python-000.txt.gz")
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        docs = f.read().split("\n\n")[:400]
    out.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return str(out)
