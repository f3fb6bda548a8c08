"""Parquet files through ``pipelines.storage``: the one home of how a stage's data files are read and
written (zstd, row groups of up to 2^20 rows), for the stage store, the stage executor and the stages.
"""
from __future__ import annotations

import io
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """One parquet file at ``uri``; errors name it."""
    try:
        return pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=columns)
    except Exception as e:
        raise ValueError(f"cannot read parquet {uri}: {type(e).__name__}: {e}") from e


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    write_parquet([table], table.schema, sink)
    return sink.getvalue().to_pybytes()


def write_parquet(tables: Iterable[pa.Table], schema: pa.Schema, sink) -> int:
    """Write ``tables`` (each selected and cast to ``schema``) in order into ``sink``, each as it comes
    (row groups of up to 2^20 rows), so only one table is held; -> rows. One table gives the bytes of
    ``pq.write_table`` with the same options, the stage files' format since the first version."""
    rows = 0
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table.select(schema.names).cast(schema).combine_chunks(), row_group_size=1 << 20)
            rows += table.num_rows
    return rows
