"""SENTENCES + a wordpiece stage output -> TOKENIZED (doc_id, sentence_ids).

An actor stage: each actor loads the tokenizer once, then encodes whole batches of sentences with
the Rust tokenizer (no special tokens). Empty sentences (nothing left after normalisation) are
dropped, and so are documents left with no sentence.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schemas, stage_store, storage
from pipelines.stages.wordpiece import load_tokenizer

STAGE = "tokenize"


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    lowercase: bool = True
    docs_per_block: int = 500
    """Documents per Ray block (the unit of parallel work)."""
    rows_per_shard: int = 20000


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


class Encoder:
    """Ray Data actor: loads the tokenizer once, encodes batches."""

    def __init__(self, wordpiece_uri: str, lowercase: bool, env: dict[str, str]):
        storage.apply_env(env)
        self.tokenizer = load_tokenizer(wordpiece_uri, lowercase)

    def __call__(self, table: pa.Table) -> pa.Table:
        return core(table, self.tokenizer)


def tokenized_dataset(sentences_uri: str, wordpiece_uri: str, cfg: TokenizeConfig, num_actors: int | None = None):
    import ray

    if num_actors is None:
        num_actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # Read (and re-block) first: actors hold their CPUs for the whole stage, and read tasks that
    # must run alongside them could never be scheduled on a 1-CPU node (a deadlock).
    ds = stage_store.read_dataset(sentences_uri, rows_per_block=cfg.docs_per_block).materialize()
    return ds.map_batches(Encoder, fn_constructor_args=(wordpiece_uri, cfg.lowercase, storage.capture_env()),
                          batch_size=None, batch_format="pyarrow", concurrency=(1, num_actors))


def run_tokenize(cfg: TokenizeConfig, sentences_uri: str, wordpiece_uri: str, root: str,
                 *, num_actors: int | None = None) -> str:
    """Encode the SENTENCES at ``sentences_uri`` into ``{root}/tokenize/{key}/``; returns its URI.
    ``num_actors`` (default: one per cluster CPU) changes speed, never the output."""
    def produce(writer: stage_store.StageWriter) -> None:
        stats = {"documents": 0, "sentences": 0, "tokens": 0}

        def count(table: pa.Table) -> None:
            stats["documents"] += table.num_rows
            lengths = pc.list_value_length(table.column("sentence_ids"))
            stats["sentences"] += pc.sum(lengths).as_py() or 0
            stats["tokens"] += pc.sum(pc.list_value_length(pc.list_flatten(table.column("sentence_ids")))).as_py() or 0

        ds = tokenized_dataset(sentences_uri, wordpiece_uri, cfg, num_actors)
        stage_store.write_batches(writer, stage_store.iter_arrow(ds), schemas.TOKENIZED, cfg.rows_per_shard,
                                  on_batch=count, desc="tokenize")
        if stats["tokens"] == 0:
            raise ValueError(f"tokenize: no token in {sentences_uri}")
        writer.stats.update(stats)

    inputs = (stage_store.input_identity(sentences_uri), stage_store.input_identity(wordpiece_uri))
    return stage_store.run_stage(root, STAGE, cfg, inputs, produce)
