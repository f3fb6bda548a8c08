"""The pyarrow schema of every table that passes between stages, in one place.

raw text files --read--> DOCUMENTS --clean--> DOCUMENTS --split--> SENTENCES --tokenize--> TOKENIZED
--nsp_pairs--> INSTANCES (parquet shards) --dynamic masking--> fixed-shape numpy batches (TRAIN_BATCH_KEYS).
"""
from __future__ import annotations

import pyarrow as pa

# One document per row. doc_id is "<source uri>#<index in file>" so it is stable and sortable.
DOCUMENTS = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
])

# A document as a list of sentences, order kept.
SENTENCES = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("sentences", pa.list_(pa.string()), nullable=False),
])

# A document as a list of tokenized sentences (WordPiece ids, no special tokens).
TOKENIZED = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("sentence_ids", pa.list_(pa.list_(pa.int32())), nullable=False),
])

# One NSP pretraining instance: [CLS] A [SEP] B [SEP], unpadded.
INSTANCES = pa.schema([
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
    pa.field("is_random_next", pa.bool_(), nullable=False),
    pa.field("num_tokens", pa.int32(), nullable=False),
    pa.field("instance_id", pa.string(), nullable=False),
])

# Keys of a masked training batch (numpy arrays, fixed shapes): (B, T) int64 except nsp_labels (B,).
TRAIN_BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "mlm_labels", "nsp_labels")


def check_schema(table: pa.Table, expected: pa.Schema, where: str) -> None:
    """Raise naming the missing or mistyped column; extra columns are allowed."""
    for field in expected:
        if field.name not in table.column_names:
            raise ValueError(f"{where}: missing column {field.name!r} (have {table.column_names})")
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise ValueError(f"{where}: column {field.name!r} has type {actual}, expected {field.type}")
