"""SENTENCES + a wordpiece stage output -> TOKENIZED (doc_id, sentence_ids).

One Ray Data task per input shard encodes all its sentences in one call to the Rust tokenizer (no
special tokens) and writes its output shard. Each worker process loads the tokenizer once and keeps
it for the shards that follow (an actor pool would do the same, but costs an actor start per stage
and routes every block through the driver). Empty sentences (nothing left after normalisation) are
dropped, and so are documents left with no sentence.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schemas, stage_store
from pipelines.stages.wordpiece import load_tokenizer

STAGE = "tokenize"


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    lowercase: bool = True


def core(table: pa.Table, tokenizer) -> pa.Table:
    """SENTENCES -> TOKENIZED with a ``bert_core.tokenizer.WordPieceTokenizer``."""
    schemas.check_schema(table, schemas.SENTENCES, "tokenize")
    sentences = table.column("sentences").combine_chunks()
    flat = sentences.flatten().to_pylist()
    encoded = tokenizer.encode_batch(flat, add_special_tokens=False)
    sent_lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    values = np.fromiter((i for e in encoded for i in e), dtype=np.int32, count=int(sent_lengths.sum()))
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


_TOKENIZERS: dict[tuple[str, bool], Any] = {}  # per worker process: (wordpiece URI, lowercase) -> tokenizer


def encode_shard(table: pa.Table, wordpiece_uri: str, lowercase: bool) -> tuple[pa.Table, dict[str, int]]:
    """``core`` on one shard with the (cached) tokenizer of ``wordpiece_uri``, with its counts."""
    key = (wordpiece_uri, lowercase)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(wordpiece_uri, lowercase)
    out = core(table, _TOKENIZERS[key])
    lengths = pc.list_value_length(out.column("sentence_ids"))
    return out, {"documents": out.num_rows, "sentences": pc.sum(lengths).as_py() or 0,
                 "tokens": pc.sum(pc.list_value_length(pc.list_flatten(out.column("sentence_ids")))).as_py() or 0}


def run_tokenize(cfg: TokenizeConfig, sentences_uri: str, wordpiece_uri: str, root: str, *,
                 concurrency: int | None = None) -> str:
    """Encode the SENTENCES at ``sentences_uri`` into ``{root}/tokenize/{key}/``; returns its URI.
    ``concurrency`` caps the tasks running at once: it changes speed, never the output."""
    def produce(writer: stage_store.StageWriter) -> None:
        stats, _ = stage_store.map_shards(writer, stage_store.data_files(sentences_uri), encode_shard,
                                       (wordpiece_uri, cfg.lowercase), schema=schemas.TOKENIZED, desc="tokenize",
                                          concurrency=concurrency)
        if not stats.get("tokens"):
            raise ValueError(f"tokenize: no token in {sentences_uri}")
        writer.stats.update(stats)

    inputs = (stage_store.input_identity(sentences_uri), stage_store.input_identity(wordpiece_uri))
    return stage_store.run_stage(root, STAGE, cfg, inputs, produce)
