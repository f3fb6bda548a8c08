"""SENTENCES + a wordpiece stage output -> TOKENIZED (doc_id, sentence_ids).

A Ray Data task per input shard; ``EncodeShard`` (the tokenizer loaded in ``__init__``, once per
worker process: ``costly_setup``) encodes all its sentences (no special tokens; each distinct space-separated
chunk goes through the Rust tokenizer once, see ``SentenceEncoder``) and writes its output shard. Empty sentences (nothing left after normalisation) are
dropped, and so are documents left with no sentence.
"""
from __future__ import annotations

import dataclasses
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schemas, stage_exec, stage_store
from pipelines.stages.wordpiece import load_tokenizer

STAGE = "tokenize"


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    lowercase: bool | None = None
    """None: the vocabulary's casing (its tokenizer.json normaliser, set by the wordpiece stage's
    ``lowercase``), which is what is used in any case; a value that contradicts it is refused before
    any work, and a value that agrees changes nothing (not even the output key)."""


class SentenceEncoder:
    """Token ids of many sentences at once, as (flat int32 ids, int64 length per sentence).

    With BERT's normaliser and pre-tokeniser (``BertNormalizer`` + ``BertPreTokenizer``: every
    character is normalised on its own and words never span an ASCII space) a sentence's ids are
    the concatenation of the ids of its space-separated chunks. Prose repeats its words, so each
    distinct chunk goes through the Rust tokenizer once and is then looked up in a per-process
    cache, emptied when it would pass ``max_entries`` (it holds at most that many chunks, or one
    call's). The cache is a chunk -> index dict over flat id arrays, so a call's ids are gathered
    with numpy, and its chunks are split and de-duplicated by Arrow; Python touches each distinct
    chunk of a call once. Any other tokenizer pipeline encodes whole sentences.
    """

    def __init__(self, tokenizer, max_entries: int = 1_000_000):
        self.tokenizer, self.max_entries = tokenizer, max_entries
        self._clear()
        inner = getattr(tokenizer, "tokenizer", None)
        self.by_chunk = (type(getattr(inner, "pre_tokenizer", None)).__name__ == "BertPreTokenizer"
                         and type(getattr(inner, "normalizer", None)).__name__ in ("BertNormalizer", "NoneType"))

    def _encode_chunks(self, chunks: list[str], per_text: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """(flat ids, ids per chunk) of ``chunks``. The tokenizer costs ~10 us per input string, so
        chunks go in joined by spaces, ``per_text`` at a time, and each token is given back to the
        chunk its offset falls in."""
        starts, texts = [], []
        for i in range(0, len(chunks), per_text):
            part = chunks[i:i + per_text]
            starts.append(np.cumsum([0] + [len(c) + 1 for c in part[:-1]]))
            texts.append(" ".join(part))
        flats, counts = [], []
        for encoding, first_char in zip(self.tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False), starts):
            ids = np.asarray(encoding.ids, dtype=np.int32)
            token_starts = np.fromiter((o[0] for o in encoding.offsets), dtype=np.int64, count=len(ids))
            chunk_of_token = np.searchsorted(first_char, token_starts, side="right") - 1
            flats.append(ids)
            counts.append(np.bincount(chunk_of_token, minlength=len(first_char)))
        return np.concatenate(flats), np.concatenate(counts)

    def _clear(self) -> None:
        self.cache: dict[str, int] = {}  # chunk -> its ids: _flat[_bounds[i]:_bounds[i + 1]]
        self._flat, self._bounds = np.zeros(0, np.int32), np.zeros(1, np.int64)

    def _add(self, chunks: list[str]) -> None:
        flat, counts = self._encode_chunks(chunks)
        self.cache.update(zip(chunks, range(len(self.cache), len(self.cache) + len(chunks))))
        self._flat = np.concatenate([self._flat, flat])
        self._bounds = np.concatenate([self._bounds, self._bounds[-1] + np.cumsum(counts)])

    def encode(self, sentences: "list[str] | pa.Array") -> tuple[np.ndarray, np.ndarray]:
        if not self.by_chunk:
            sentences = sentences.to_pylist() if isinstance(sentences, pa.Array) else sentences
            encoded = self.tokenizer.encode_batch(sentences, add_special_tokens=False)
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            return np.fromiter(chain.from_iterable(encoded), dtype=np.int32, count=int(lengths.sum())), lengths
        if not len(sentences):
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        # each sentence's split(" "), then its distinct chunks, in Arrow's C++
        array = sentences if isinstance(sentences, pa.Array) else pa.array(sentences, pa.string())
        parts = pc.split_pattern(array, " ")
        chunks = pc.dictionary_encode(parts.flatten())
        distinct = chunks.dictionary.to_pylist()
        missing = [c for c in distinct if c not in self.cache]
        if len(self.cache) + len(missing) > self.max_entries:
            self._clear()
            missing = distinct
        if missing:
            self._add(missing)
        where = np.fromiter(map(self.cache.__getitem__, distinct), dtype=np.int64, count=len(distinct))
        chunk = where[chunks.indices.to_numpy()]  # every chunk's cache index, in order
        first = self._bounds[chunk]
        lengths = self._bounds[chunk + 1] - first
        ends = np.cumsum(lengths)
        # token k of the output is _flat[first[c] + (k - start of c)] for the chunk c it falls in
        values = self._flat[np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths - first, lengths)]
        per_sentence = np.concatenate([[0], ends])[parts.offsets.to_numpy().astype(np.int64) - parts.offsets[0].as_py()]
        return values, np.diff(per_sentence)


def core(table: pa.Table, tokenizer) -> pa.Table:
    """SENTENCES -> TOKENIZED with a ``bert_core.tokenizer.WordPieceTokenizer`` (or a
    ``SentenceEncoder`` around one, to keep its cache between calls)."""
    schemas.check_schema(table, schemas.SENTENCES, "tokenize")
    encoder = tokenizer if isinstance(tokenizer, SentenceEncoder) else SentenceEncoder(tokenizer)
    sentences = table.column("sentences").combine_chunks()
    values, sent_lengths = encoder.encode(sentences.flatten())
    keep = sent_lengths > 0
    doc_offsets = sentences.offsets.to_numpy() - sentences.offsets[0].as_py()
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    new_doc_offsets = kept_before[doc_offsets]
    sent_offsets = np.concatenate([[0], np.cumsum(sent_lengths[keep])])
    inner = pa.ListArray.from_arrays(pa.array(sent_offsets, pa.int32()), pa.array(values, pa.int32()))
    outer = pa.ListArray.from_arrays(pa.array(new_doc_offsets, pa.int32()), inner)
    out = pa.table({"doc_id": table.column("doc_id"), "sentence_ids": outer})
    out = out.filter(pc.greater(pc.list_value_length(out.column("sentence_ids")), 0))
    return out.cast(schemas.TOKENIZED)


class EncodeShard:
    """``map_units``' worker for tokenize: loads the tokenizer of ``wordpiece_uri`` once per worker
    process (its ``SentenceEncoder`` chunk cache then serves every shard that process gets)."""

    costly_setup = True  # map_units: built once per worker process and stage attempt, then reused

    def __init__(self, wordpiece_uri: str):
        self.encoder = SentenceEncoder(load_tokenizer(wordpiece_uri))

    def __call__(self, table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        out = core(table, self.encoder)
        lengths = pc.list_value_length(out.column("sentence_ids"))
        return out, {"documents": out.num_rows, "sentences": pc.sum(lengths).as_py() or 0,
                     "tokens": pc.sum(pc.list_value_length(pc.list_flatten(out.column("sentence_ids")))).as_py() or 0}


def run_tokenize(cfg: TokenizeConfig, sentences_uri: str, wordpiece_uri: str, root: str, *,
                 concurrency: int | None = None) -> str:
    """Encode the SENTENCES at ``sentences_uri`` into ``{root}/tokenize/{key}/``; returns its URI.
    ``concurrency`` caps the tasks running at once: it changes speed, never the output."""
    lowercase = load_tokenizer(wordpiece_uri).lowercase
    if cfg.lowercase is not None and cfg.lowercase != lowercase:
        raise ValueError(f"tokenize: lowercase={cfg.lowercase} contradicts the vocabulary {wordpiece_uri}, whose "
                         f"normalizer {'lowercases' if lowercase else 'keeps case'}; the casing is the vocabulary's "
                         "(the wordpiece stage's lowercase)")

    def produce(writer: stage_store.StageWriter) -> None:
        stats, _ = stage_exec.map_units(writer, stage_store.shard_units(sentences_uri), worker=EncodeShard,
                                        worker_args=(wordpiece_uri,), schema=schemas.TOKENIZED, desc="tokenize",
                                        concurrency=concurrency)
        if not stats.get("tokens"):
            raise ValueError(f"tokenize: no token in {sentences_uri}")
        writer.stats.update(stats, lowercase=lowercase)

    inputs = (stage_store.input_identity(sentences_uri), stage_store.input_identity(wordpiece_uri))
    # The casing is the vocabulary's, which the wordpiece input's identity already covers.
    return stage_store.run_stage(root, STAGE, dataclasses.replace(cfg, lowercase=None), inputs, produce, version=2)
