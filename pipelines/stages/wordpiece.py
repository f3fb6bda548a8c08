"""SENTENCES -> a WordPiece vocabulary: ``vocab.txt`` + ``tokenizer.json`` in the stage directory.

Either trains a BERT WordPiece vocabulary (``[PAD] [UNK] [CLS] [SEP] [MASK]`` take ids 0-4) with
``tokenizers``, or, with ``vocab_file``, adopts a given ``vocab.txt`` (any storage URI). Training runs
in one Ray task on a worker, never on the driver: Ray Data tasks pick the sample (the documents whose
doc_id hash falls under ``sample_fraction``), and the training task streams it in corpus order,
stopping at ``max_sample_bytes`` of text, onto its local disk (``SpooledTexts``), which the trainer
reads twice: the task holds word counts, never the sample. Downstream
stages get the result as a typed ``Vocabulary`` (URI, casing, special-token ids).

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
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

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
    max_sample_bytes: int = 512 << 20
    """Cap on the training text (UTF-8 bytes), taken in corpus order from the sample: it bounds the
    training task's time and its local disk (the sample is spooled there, not held in memory). Set
    ``sample_fraction`` so the sample fits under it; stats.json says whether the cap cut it
    (``sample_capped``)."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What downstream stages need of a wordpiece output, handed over by the DAG."""

    uri: str
    lowercase: bool
    size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    @classmethod
    def of(cls, wordpiece_uri: str) -> "Vocabulary":
        tok = load_tokenizer(wordpiece_uri)
        return cls(wordpiece_uri, tok.lowercase, tok.vocab_size, tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id,
                   tok.mask_id)


def in_sample(doc_id: str, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")
    return h < fraction * 2**64


def sample_block(block: pa.Table, fraction: float) -> pa.Table:
    """The rows of the sampled documents (a Ray Data map task)."""
    keep = [in_sample(d, fraction) for d in block.column("doc_id").to_pylist()]
    return block.filter(pa.array(keep, pa.bool_()))


def iter_training_text(sentences_uri: str, sample_fraction: float, max_bytes: int,
                       counts: dict[str, int]) -> Iterator[str]:
    """Sentences of the sampled documents, in corpus order, up to ``max_bytes`` of UTF-8."""
    ds = stage_store.read_dataset(sentences_uri, columns=["doc_id", "sentences"])
    if sample_fraction < 1.0:
        ds = ds.map_batches(sample_block, fn_args=(sample_fraction,), batch_size=None, batch_format="pyarrow")
    for batch in stage_store.iter_arrow(ds, 1024):
        for sentence in pc.list_flatten(batch.column("sentences")).to_pylist():
            size = len(sentence.encode("utf-8"))
            if counts["bytes"] + size > max_bytes:
                counts["capped"] = 1
                return
            counts["bytes"] += size
            counts["sentences"] += 1
            yield sentence


class SpooledTexts:
    """The training sample on the task's local disk, re-readable in order: the trainer reads it twice
    (alphabet, then training) and never holds it, so the task's memory does not grow with the
    sample (the trainer keeps word counts only). Each text is its UTF-8 length (4 bytes) and bytes."""

    def __init__(self, path: str):
        self.path = path

    def write(self, texts: Iterator[str]) -> None:
        with open(self.path, "wb", buffering=1 << 20) as f:
            for text in texts:
                data = text.encode("utf-8")
                f.write(len(data).to_bytes(4, "little"))
                f.write(data)

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb", buffering=1 << 20) as f:
            while header := f.read(4):
                yield f.read(int.from_bytes(header, "little")).decode("utf-8")


def _train(cfg: WordPieceConfig, sentences_uri: str, tmp: str, env: dict[str, str]) -> dict[str, Any]:
    """The training task: sample, train, write ``vocab.txt`` and ``tokenizer.json`` into ``tmp``."""
    from pipelines import stage_exec

    storage.apply_env(env)
    counts = {"sentences": 0, "bytes": 0, "capped": 0}
    with tempfile.TemporaryDirectory(prefix="wordpiece-sample-") as spool_dir:
        texts = SpooledTexts(os.path.join(spool_dir, "sample.bin"))
        with stage_exec.stage_data_context():  # corpus order inside this task too
            texts.write(iter_training_text(sentences_uri, cfg.sample_fraction, cfg.max_sample_bytes, counts))
        if not counts["sentences"]:
            raise ValueError(f"wordpiece: no training text in {sentences_uri}")
        tok = WordPieceTokenizer.train(texts, cfg.vocab_size, cfg.min_frequency, cfg.lowercase,
                                       limit_alphabet=cfg.limit_alphabet)
    files = _save_tokenizer(tok, tmp)
    return {"files": files, "training_sentences": counts["sentences"], "training_bytes": counts["bytes"],
            "sample_capped": bool(counts["capped"]), "vocab_size": tok.vocab_size}


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


def _save_tokenizer(tok: WordPieceTokenizer, uri: str) -> list[list]:
    """Write ``vocab.txt`` and ``tokenizer.json`` into ``uri``; -> [[name, bytes], ...]."""
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(tmp)
        for name in ("vocab.txt", "tokenizer.json"):
            with open(os.path.join(tmp, name), "rb") as f:
                data = f.read()
            storage.write_bytes_atomic(storage.join(uri, name), data)
            files.append([name, len(data)])
    return files


def run_wordpiece(cfg: WordPieceConfig, sentences_uri: str, root: str) -> str:
    """Train (or adopt) the vocabulary into ``{root}/wordpiece/{key}/``; returns its URI."""
    if cfg.vocab_file is not None:
        vocab_bytes = storage.read_bytes(cfg.vocab_file)
        identity = ("vocab", hashlib.sha256(vocab_bytes).hexdigest())

        def produce(writer: stage_store.StageWriter) -> None:
            vocab = vocab_bytes.decode("utf-8").splitlines()
            while vocab and not vocab[-1]:
                vocab.pop()
            tok = WordPieceTokenizer.from_vocab(vocab, cfg.lowercase)
            for name, num_bytes in _save_tokenizer(tok, writer.tmp):
                writer.add_file(name, num_bytes, None)
            writer.stats.update(vocab_size=tok.vocab_size)
    else:
        identity = ("sentences", stage_store.input_identity(sentences_uri))
        if not 0.0 < cfg.sample_fraction <= 1.0:
            raise ValueError(f"wordpiece: sample_fraction must be in (0, 1], got {cfg.sample_fraction}")

        def produce(writer: stage_store.StageWriter) -> None:
            import ray

            train = ray.remote(num_cpus=1)(_train)
            stats = ray.get(train.remote(cfg, sentences_uri, writer.tmp, storage.capture_env()))
            for name, num_bytes in stats.pop("files"):
                writer.add_file(name, num_bytes, None)
            writer.stats.update(stats)

    return stage_store.run_stage(root, STAGE, cfg, (identity,), produce)
