"""SENTENCES -> a WordPiece vocabulary: ``vocab.txt`` + ``tokenizer.json`` in the stage directory.

Either trains a BERT WordPiece vocabulary (``[PAD] [UNK] [CLS] [SEP] [MASK]`` take ids 0-4) with
``tokenizers`` from all sentences, or a deterministic sample of documents (chosen by a hash of their
doc_id), streamed from Ray Data in corpus order; or, with ``vocab_file``, adopts a given
``vocab.txt`` (any storage URI).

Determinism: training is deterministic. Upstream, ``tokenizers``' trainer numbers the ``##c`` pieces in
hash-map order, and those ids break ties among equally frequent merges (tokenizers issue #1794), so two
trainings on the same text could differ. ``bert_core.tokenizer.WordPieceTokenizer.train`` hands the trainer
the alphabet and every ``##c`` piece up front in sorted order, so the same sentences always give the same
vocabulary (tested over repeated runs). ``vocab_file`` adopts a published vocabulary instead.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from typing import Iterator

from bert_core.tokenizer import WordPieceTokenizer
from pipelines import stage_store, storage

STAGE = "wordpiece"


@dataclasses.dataclass(frozen=True)
class WordPieceConfig:
    vocab_file: str | None = None
    """A ``vocab.txt`` to use instead of training (any storage URI)."""
    vocab_size: int = 30522
    min_frequency: int = 2
    lowercase: bool = True
    limit_alphabet: int = 1000
    sample_fraction: float = 1.0
    """Share of documents to train on, picked by a hash of doc_id (deterministic)."""


def in_sample(doc_id: str, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")
    return h < fraction * 2**64


def iter_training_text(sentences_uri: str, sample_fraction: float) -> Iterator[str]:
    """Sentences of the sampled documents, in corpus order, streamed through Ray Data."""
    ds = stage_store.read_dataset(sentences_uri)
    for batch in stage_store.iter_arrow(ds, 1024):
        for doc_id, sentences in zip(batch.column("doc_id").to_pylist(), batch.column("sentences").to_pylist()):
            if in_sample(doc_id, sample_fraction):
                yield from sentences


def load_tokenizer(wordpiece_uri: str, lowercase: bool | None = None) -> WordPieceTokenizer:
    """The tokenizer of a wordpiece stage output (fetched to a local temp dir when remote), with the
    casing it was trained with (a contradicting ``lowercase`` raises; see ``WordPieceTokenizer.load``)."""
    if storage.is_local(wordpiece_uri):
        return WordPieceTokenizer.load(storage.join(wordpiece_uri, "tokenizer.json"), lowercase)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        with open(path, "wb") as f:
            f.write(storage.read_bytes(storage.join(wordpiece_uri, "tokenizer.json")))
        return WordPieceTokenizer.load(path, lowercase)


def _write_tokenizer(writer: stage_store.StageWriter, tok: WordPieceTokenizer) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(tmp)
        for name in ("vocab.txt", "tokenizer.json"):
            with open(os.path.join(tmp, name), "rb") as f:
                writer.write_bytes(name, f.read())
    writer.stats.update(vocab_size=tok.vocab_size)


def run_wordpiece(cfg: WordPieceConfig, sentences_uri: str, root: str) -> str:
    """Train (or adopt) the vocabulary into ``{root}/wordpiece/{key}/``; returns its URI."""
    if cfg.vocab_file is not None:
        vocab_bytes = storage.read_bytes(cfg.vocab_file)
        identity = ("vocab", hashlib.sha256(vocab_bytes).hexdigest())

        def produce(writer: stage_store.StageWriter) -> None:
            vocab = vocab_bytes.decode("utf-8").splitlines()
            while vocab and not vocab[-1]:
                vocab.pop()
            _write_tokenizer(writer, WordPieceTokenizer.from_vocab(vocab, cfg.lowercase))
    else:
        identity = ("sentences", stage_store.input_identity(sentences_uri))
        if not 0.0 < cfg.sample_fraction <= 1.0:
            raise ValueError(f"wordpiece: sample_fraction must be in (0, 1], got {cfg.sample_fraction}")

        def produce(writer: stage_store.StageWriter) -> None:
            counts = {"sentences": 0}

            def counted() -> Iterator[str]:
                for s in iter_training_text(sentences_uri, cfg.sample_fraction):
                    counts["sentences"] += 1
                    yield s

            tok = WordPieceTokenizer.train(counted(), cfg.vocab_size, cfg.min_frequency, cfg.lowercase,
                                           limit_alphabet=cfg.limit_alphabet)
            if counts["sentences"] == 0:
                raise ValueError(f"wordpiece: no training text in {sentences_uri}")
            writer.stats.update(training_sentences=counts["sentences"])
            _write_tokenizer(writer, tok)

    return stage_store.run_stage(root, STAGE, cfg, (identity,), produce)
