"""Fixtures for the pretraining tests: a WordPiece vocabulary trained in-process on real English text and
INSTANCES parquet shards ([CLS] A [SEP] B [SEP], half with a random B) built from the same text.

Text: the demo corpus shipped in pipelines/demo/corpus when present, else the Python documentation
topics that ship with the standard library (``pydoc_data.topics``), so no download is needed.
"""
from __future__ import annotations

import glob
import gzip
import os
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bert_core import WordPieceTokenizer
from pipelines.schemas import INSTANCES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus_documents(max_chars: int = 600_000, lines_per_doc: int = 30) -> list[str]:
    """Real English documents (runs of ``lines_per_doc`` lines), deterministic order."""
    files = sorted(glob.glob(os.path.join(REPO, "pipelines", "demo", "corpus", "*.txt*")))
    if files:
        texts = []
        for f in files:
            with (gzip.open(f, "rt", encoding="utf-8") if f.endswith(".gz") else open(f, encoding="utf-8")) as fh:
                lines = fh.read().splitlines()
            texts += ["\n".join(lines[i:i + lines_per_doc]) for i in range(0, len(lines), lines_per_doc)]
    else:
        import pydoc_data.topics

        texts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    docs, total = [], 0
    for text in texts:
        doc = re.sub(r"\s+", " ", re.sub(r"([*=~^#-])\1{2,}", " ", text)).strip()
        if len(doc) > 200:
            docs.append(doc)
            total += len(doc)
        if total >= max_chars:
            break
    return docs


def split_sentences(doc: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", doc) if len(s) > 10]


def build_instances(docs: list[str], tokenizer: WordPieceTokenizer, seq_len: int, seed: int = 0) -> pa.Table:
    """Greedy NSP pairs: segment A = consecutive sentences, B = the following ones or (50%) another doc's."""
    rng = random.Random(seed)
    tokenized = [[ids for ids in tokenizer.encode_batch(split_sentences(d)) if ids] for d in docs]
    tokenized = [d for d in tokenized if len(d) >= 2]
    rows = {name: [] for name in INSTANCES.names}
    budget = seq_len - 3
    for doc_index, sentences in enumerate(tokenized):
        i = 0
        while i < len(sentences) - 1:
            a: list[int] = []
            while i < len(sentences) - 1 and len(a) < budget // 2:
                a += sentences[i]
                i += 1
            is_random = rng.random() < 0.5
            source = tokenized[rng.choice([j for j in range(len(tokenized)) if j != doc_index])] if is_random else sentences[i:]
            b: list[int] = []
            for s in source:
                if len(a) + len(b) >= budget:
                    break
                b += s
            if not is_random:
                i += 1
            while len(a) + len(b) > budget:  # truncate longest-first, as BERT does
                (a if len(a) > len(b) else b).pop()
            if not a or not b:
                continue
            ids = [tokenizer.cls_id] + a + [tokenizer.sep_id] + b + [tokenizer.sep_id]
            rows["input_ids"].append(ids)
            rows["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            rows["is_random_next"].append(is_random)
            rows["num_tokens"].append(len(ids))
            rows["instance_id"].append(f"doc{doc_index}-{len(rows['instance_id'])}")
    return pa.Table.from_pydict(rows, schema=INSTANCES)


def write_instances(table: pa.Table, directory: str, num_files: int = 4) -> str:
    os.makedirs(directory, exist_ok=True)
    per = -(-table.num_rows // num_files)
    for k in range(num_files):
        pq.write_table(table.slice(k * per, per), os.path.join(directory, f"part-{k:05d}.parquet"))
    return directory


@pytest.fixture(scope="session")
def pretrain_corpus(tmp_path_factory):
    """(instances_dir for seq 64, vocab.txt path, tokenizer) built once per session."""
    root = tmp_path_factory.mktemp("pretrain-corpus")
    docs = corpus_documents()
    tokenizer = WordPieceTokenizer.train(docs, vocab_size=1000, min_frequency=2)
    tokenizer.save(str(root / "vocab"))
    instances = write_instances(build_instances(docs, tokenizer, seq_len=64), str(root / "instances-64"))
    return instances, str(root / "vocab" / "vocab.txt"), tokenizer


@pytest.fixture(scope="session")
def pretrain_instances_128(pretrain_corpus, tmp_path_factory):
    """INSTANCES for seq 128 from the same text and vocabulary (a seq-128 phase refuses seq-64 ones)."""
    _, _, tokenizer = pretrain_corpus
    root = tmp_path_factory.mktemp("pretrain-corpus-128")
    return write_instances(build_instances(corpus_documents(), tokenizer, seq_len=128), str(root / "instances-128"))
