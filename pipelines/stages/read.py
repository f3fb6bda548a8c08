"""raw text files -> DOCUMENTS (doc_id, text).

Reads any URI ``pipelines.storage`` understands (local, ``s3://``, ``gs://``, ``http(s)://``), globs,
directories, many files in parallel (one Ray task per file, streaming). Formats, by extension after
any ``.gz``/``.bz2``/``.zst``:
- ``.txt`` (and anything else): BERT format, documents separated by blank lines; the lines of a
  document are kept, joined with ``\\n``.
- ``.jsonl``/``.json``: one document per line, the text in ``cfg.text_field``.
- ``.parquet``: one document per row of column ``cfg.text_field``.
Invalid UTF-8 is decoded as U+FFFD so the clean stage can count and drop it.
``doc_id`` = ``<uri>#<index in file, 9 digits>``: stable and sortable in corpus order.
"""
from __future__ import annotations

import dataclasses
import io
import json
import posixpath
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import schemas, stage_store, storage

STAGE = "read"
COMPRESSED = (".gz", ".bz2", ".zst", ".xz")


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    text_field: str = "text"
    """Field of ``.jsonl`` records / column of parquet files that holds the text."""
    docs_per_batch: int = 2000
    """Documents per table while a file streams (bounds the memory of a big file)."""
    rows_per_shard: int = 5000
    """At most this many rows per output parquet shard. The shards are the unit of parallel work of
    the stages that follow, so a big file becomes several."""
    chars_per_shard: int = 4_000_000
    """A shard ends at the document that takes it to this many characters (so shards cost about the
    same to process however long the documents are)."""


class ReadError(RuntimeError):
    """A file that exists but cannot be read or parsed; the message names it."""


def file_format(uri: str) -> str:
    name = posixpath.basename(uri).lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "txt"


def _documents(source: str, texts: list[str], start: int) -> pa.Table:
    ids = [f"{source}#{start + i:09d}" for i in range(len(texts))]
    return pa.table({"doc_id": ids, "text": texts}, schema=schemas.DOCUMENTS)


def core(lines: Iterator[str], source: str, fmt: str = "txt", text_field: str = "text",
         docs_per_batch: int = 2000) -> Iterator[pa.Table]:
    """Parse the lines of one text file into DOCUMENTS tables (pure, streaming)."""
    batch: list[str] = []
    current: list[str] = []
    start = 0
    for num, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if fmt == "jsonl":
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReadError(f"{source}:{num}: not valid JSON ({e.msg})") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise ReadError(f"{source}:{num}: no string field {text_field!r}")
            batch.append(text)
        elif line.strip():
            current.append(line)
            continue
        elif current:
            batch.append("\n".join(current))
            current = []
        if len(batch) >= docs_per_batch:
            yield _documents(source, batch, start)
            start, batch = start + len(batch), []
    if current:
        batch.append("\n".join(current))
    if batch:
        yield _documents(source, batch, start)


def _read_parquet(uri: str, text_field: str) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(io.BytesIO(storage.read_bytes(uri)))
    if text_field not in pf.schema_arrow.names:
        raise ReadError(f"{uri}: no column {text_field!r} (have {pf.schema_arrow.names})")
    start = 0
    for rb in pf.iter_batches(columns=[text_field]):
        texts = [t or "" for t in rb.column(0).to_pylist()]
        yield _documents(uri, texts, start)
        start += len(texts)


def read_file(uri: str, cfg: ReadConfig) -> Iterator[pa.Table]:
    """DOCUMENTS tables of one file; errors name the file."""
    fmt = file_format(uri)
    try:
        if fmt == "parquet":
            yield from _read_parquet(uri, cfg.text_field)
            return
        with storage.open_uri(uri, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)
            yield from core(text, uri, fmt, cfg.text_field, cfg.docs_per_batch)
    except ReadError:
        raise
    except Exception as e:  # corrupt archives, permissions, network: say which file
        raise ReadError(f"cannot read {uri}: {type(e).__name__}: {e}") from e


def input_identity(files: list[str]) -> list[list]:
    """Names and sizes of the input files (what the stage key hashes)."""
    out = []
    for f in files:
        try:
            out.append([f, storage.size(f)])
        except Exception:
            out.append([f, None])  # http(s): size unknown
    return out


def _shard_end(table: pa.Table, cfg: ReadConfig) -> int | None:
    """Rows of the first full shard of ``table``, or None while it holds less than one shard."""
    chars = np.cumsum(pc.utf8_length(table.column("text")).to_numpy(zero_copy_only=False))
    by_chars = int(np.searchsorted(chars, cfg.chars_per_shard)) + 1 if len(chars) and chars[-1] >= cfg.chars_per_shard else None
    by_rows = cfg.rows_per_shard if table.num_rows >= cfg.rows_per_shard else None
    ends = [e for e in (by_chars, by_rows) if e is not None]
    return min(ends) if ends else None


def read_shards(uri: str, cfg: ReadConfig) -> tuple[Iterator[pa.Table], dict[str, int]]:
    """One input file -> its DOCUMENTS as a stream of shards (see ``_shard_end``), and counts that
    are complete once the stream is."""
    counts = {"documents": 0, "chars": 0}

    def shards() -> Iterator[pa.Table]:
        pending = pa.table({"doc_id": [], "text": []}, schema=schemas.DOCUMENTS)
        for table in read_file(uri, cfg):
            counts["documents"] += table.num_rows
            counts["chars"] += pc.sum(pc.utf8_length(table.column("text"))).as_py() or 0
            pending = pa.concat_tables([pending, table])
            while True:
                cut = _shard_end(pending, cfg)
                if cut is None:
                    break
                yield pending.slice(0, cut)
                pending = pending.slice(cut)
        if pending.num_rows:
            yield pending

    return shards(), counts


def run_read(cfg: ReadConfig, inputs: str | list[str], root: str, *, concurrency: int | None = None) -> str:
    """Read ``inputs`` (URIs, globs or directories) into ``{root}/read/{key}/``; returns its URI.
    One Ray Data task per file writes that file's documents as ``part-{file:05d}-{k:04d}.parquet``."""
    patterns = [inputs] if isinstance(inputs, str) else list(inputs)
    if not patterns:
        raise ValueError("read: no input given")
    files = sorted({f for p in patterns for f in storage.expand(p)})

    def produce(writer: stage_store.StageWriter) -> None:
        started = time.time()
        counts, _ = stage_store.map_shards(writer, files, read_shards, (cfg,), schema=schemas.DOCUMENTS,
                                           desc="read", read_input=False, concurrency=concurrency)
        if not counts.get("documents"):
            raise ValueError(f"read: the corpus is empty: {len(files)} file(s) from {patterns} hold no document")
        writer.stats.update(counts, files=len(files), input_bytes=sum(s or 0 for _, s in input_identity(files)),
                            read_seconds=round(time.time() - started, 3))

    return stage_store.run_stage(root, STAGE, cfg, (input_identity(files),), produce)
