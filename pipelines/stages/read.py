"""raw text files -> DOCUMENTS (doc_id, text).

Reads any URI ``pipelines.storage`` understands (local, ``s3://``, ``gs://``, ``http(s)://``), globs,
directories. Formats, by extension after any ``.gz``/``.bz2``/``.zst``/``.xz``:
- ``.txt`` (and anything else): BERT format, documents separated by blank lines; the lines of a
  document are kept, joined with ``\\n``.
- ``.jsonl``/``.json``: one document per line, the text in ``cfg.text_field``.
- ``.parquet``: one document per row of column ``cfg.text_field``.

Large inputs are split across many read tasks (``plan_units``): an uncompressed text file into byte
ranges of ``block_bytes``, a parquet file into runs of row groups of about that size. A range owns
the documents (``.txt``) or records (``.jsonl``) whose first line starts inside it, and reads past its
end to finish the last one. Compressed files, and files whose size is unknown, are one task each.

Invalid UTF-8 is decoded as U+FFFD so the clean stage can count and drop it. A line longer than
``max_line_bytes`` is never held in memory: its document (or record) is dropped and counted
(``dropped_too_large``). ``doc_id`` = ``<uri>#<position, 12 digits>``, the byte offset of the
document's first line in the (decompressed) file, or the row of a parquet file: stable, and sortable
in corpus order whatever the ranges.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import posixpath
import time
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import schemas, stage_exec, stage_store, storage
from pipelines.stage_exec import Unit

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
    block_bytes: int = 64 << 20
    """Bytes of an uncompressed text file (or of a parquet file's row groups) per read task."""
    max_line_bytes: int = 16 << 20
    """A longer line is skipped as it streams, and its document or record dropped and counted."""

    def __post_init__(self) -> None:
        for name in ("docs_per_batch", "rows_per_shard", "chars_per_shard", "block_bytes", "max_line_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"read: {name} must be >= 1, got {getattr(self, name)}")


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


def _documents(source: str, positions: list[int], texts: list[str]) -> pa.Table:
    ids = [f"{source}#{p:012d}" for p in positions]
    return pa.table({"doc_id": ids, "text": texts}, schema=schemas.DOCUMENTS)


def iter_lines(raw, offset: int, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(byte offset, line) of a binary stream from ``offset``; a line longer than ``max_line_bytes``
    is read through in 1 MiB steps and given as None."""
    while True:
        line = raw.readline(max_line_bytes + 1)
        if not line:
            return
        start, offset = offset, offset + len(line)
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while True:
                more = raw.readline(1 << 20)
                offset += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield start, None
        else:
            yield start, line


def core(lines: Iterable[tuple[int, bytes | None]], source: str, fmt: str = "txt", text_field: str = "text",
         docs_per_batch: int = 2000, *, stop: int | None = None, after_blank: bool = True,
         counts: dict[str, int] | None = None) -> Iterator[pa.Table]:
    """Parse (offset, line) pairs of one file into DOCUMENTS tables (pure, streaming). Only documents
    (records) that start before ``stop`` are made; ``after_blank=False``: the lines before the first
    blank one continue a document that starts before these lines, and are skipped. A None line (too
    long) drops its document or record, counted in ``counts["dropped_too_large"]``."""
    counts = {} if counts is None else counts
    counts.setdefault("dropped_too_large", 0)
    positions: list[int] = []
    batch: list[str] = []
    current: list[str] = []
    current_start, oversize, skipping = 0, False, not after_blank and fmt != "jsonl"
    for num, (offset, raw) in enumerate(lines, 1):
        line = None if raw is None else raw.decode("utf-8", errors="replace").rstrip("\r\n")
        blank = line is not None and not line.strip()
        if fmt == "jsonl":
            if blank:
                continue
            if stop is not None and offset >= stop:
                break
            if line is None:
                counts["dropped_too_large"] += 1
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReadError(f"{source}: byte {offset}: not valid JSON ({e.msg})") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise ReadError(f"{source}: byte {offset}: no string field {text_field!r}")
            positions.append(offset)
            batch.append(text)
        elif skipping:
            skipping = not blank
            continue
        elif not blank:
            if not current:
                if stop is not None and offset >= stop:
                    break
                current_start, oversize = offset, False
            oversize |= line is None
            current.append(line or "")
            continue
        elif current:
            if oversize:
                counts["dropped_too_large"] += 1
            else:
                positions.append(current_start)
                batch.append("\n".join(current))
            current = []
        if len(batch) >= docs_per_batch:
            yield _documents(source, positions, batch)
            positions, batch = [], []
    if current:
        if oversize:
            counts["dropped_too_large"] += 1
        else:
            positions.append(current_start)
            batch.append("\n".join(current))
    if batch:
        yield _documents(source, positions, batch)


def _line_start(raw, start: int) -> tuple[int, bool]:
    """Seek ``raw`` to the first line that starts at or after ``start``; -> (its offset, whether the
    line before it is blank). A line before it longer than 4 KiB counts as blank only if its last
    4 KiB are all whitespace."""
    if start == 0:
        return 0, True
    back = min(start, 4096)
    raw.seek(start - back)
    window = raw.read(back)
    rest = b""
    if not window.endswith(b"\n"):  # ``start`` is inside a line: read through its end
        while True:
            more = raw.readline(1 << 20)
            rest += more if len(rest) < 4096 else b""
            if not more or more.endswith(b"\n"):
                break
        offset = raw.tell()
        previous = window[window.rfind(b"\n") + 1:] + rest
    else:
        offset = start
        previous = window[:-1][window[:-1].rfind(b"\n") + 1:]
    return offset, not previous.strip()


def _read_parquet(unit: Unit, text_field: str) -> Iterator[pa.Table]:
    fs, path = storage.filesystem(unit.uri)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        if text_field not in pf.schema_arrow.names:
            raise ReadError(f"{unit.uri}: no column {text_field!r} (have {pf.schema_arrow.names})")
        stop = pf.num_row_groups if unit.stop is None else unit.stop
        row = sum(pf.metadata.row_group(g).num_rows for g in range(unit.start))
        for group in range(unit.start, stop):
            texts = [t or "" for t in pf.read_row_group(group, columns=[text_field]).column(0).to_pylist()]
            yield _documents(unit.uri, list(range(row, row + len(texts))), texts)
            row += len(texts)


def read_unit(unit: Unit, cfg: ReadConfig, counts: dict[str, int] | None = None) -> Iterator[pa.Table]:
    """DOCUMENTS tables of one unit (a whole file, a byte range, row groups); errors name the file."""
    fmt = file_format(unit.uri)
    counts = {} if counts is None else counts
    try:
        if fmt == "parquet":
            yield from _read_parquet(unit, cfg.text_field)
            return
        whole = unit.start == 0 and unit.stop is None
        compressed = posixpath.basename(unit.uri).lower().endswith(COMPRESSED)
        with storage.open_uri(unit.uri, "rb", compression="infer_from_extension" if whole else "disable") as raw:
            if compressed:  # not every decompressor has readline(size) (zstandard's has not)
                raw = io.BufferedReader(raw, 1 << 20)
            offset, after_blank = _line_start(raw, unit.start)
            yield from core(iter_lines(raw, offset, cfg.max_line_bytes), unit.uri, fmt, cfg.text_field,
                            cfg.docs_per_batch, stop=unit.stop, after_blank=after_blank, counts=counts)
    except ReadError:
        raise
    except Exception as e:  # corrupt archives, permissions, network: say which file
        raise ReadError(f"cannot read {unit.uri}: {type(e).__name__}: {e}") from e


def read_file(uri: str, cfg: ReadConfig) -> Iterator[pa.Table]:
    """DOCUMENTS tables of one whole file."""
    yield from read_unit(Unit(uri), cfg)


def input_identity(files: list[str]) -> list[list]:
    """Names and sizes of the input files (what the stage key hashes); sizes looked up in parallel. A
    shipped ``demo:`` file is named by its ``demo:`` URI and identified by its content hash too, so the
    key is the same wherever the package is installed (a laptop, a job's working directory)."""
    def entry(f: str) -> list:
        if storage.is_demo(f):
            data = storage.read_bytes(f)
            return [f, len(data), hashlib.sha256(data).hexdigest()]
        try:
            return [f, storage.size(f)]
        except Exception:
            return [f, None]  # http(s): size unknown

    return storage.parallel_map(entry, files)


def plan_units(identity: list[list], cfg: ReadConfig) -> list[Unit]:
    """The read tasks: byte ranges of ``block_bytes`` for uncompressed text of known size, runs of
    row groups of about ``block_bytes`` for parquet, else the whole file."""
    units: list[Unit] = []
    for uri, size, *_ in identity:
        fmt = file_format(uri)
        compressed = posixpath.basename(uri).lower().endswith(COMPRESSED)
        if fmt == "parquet" and size and size > cfg.block_bytes:
            units += _row_group_units(uri, cfg.block_bytes)
        elif fmt != "parquet" and not compressed and size and size > cfg.block_bytes:
            units += [Unit(uri, s, min(s + cfg.block_bytes, size)) for s in range(0, size, cfg.block_bytes)]
        else:
            units.append(Unit(uri))
    return units


def _row_group_units(uri: str, block_bytes: int) -> list[Unit]:
    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
    except Exception as e:
        raise ReadError(f"cannot read parquet {uri}: {type(e).__name__}: {e}") from e
    units, first, acc = [], 0, 0
    for g in range(meta.num_row_groups):
        acc += meta.row_group(g).total_byte_size
        if acc >= block_bytes:
            units.append(Unit(uri, first, g + 1))
            first, acc = g + 1, 0
    if first < meta.num_row_groups or not units:
        units.append(Unit(uri, first, meta.num_row_groups))
    return units


def _shard_end(table: pa.Table, cfg: ReadConfig) -> int | None:
    """Rows of the first full shard of ``table``, or None while it holds less than one shard."""
    chars = np.cumsum(pc.utf8_length(table.column("text")).to_numpy(zero_copy_only=False))
    by_chars = int(np.searchsorted(chars, cfg.chars_per_shard)) + 1 if len(chars) and chars[-1] >= cfg.chars_per_shard else None
    by_rows = cfg.rows_per_shard if table.num_rows >= cfg.rows_per_shard else None
    ends = [e for e in (by_chars, by_rows) if e is not None]
    return min(ends) if ends else None


def read_shards(unit: Unit | str, cfg: ReadConfig) -> Iterator[pa.Table | dict[str, int]]:
    """One unit -> its DOCUMENTS as a stream of shards (see ``_shard_end``), then its counts
    (``units_read`` is 1: summed over the stage, the number of read tasks that ran to the end)."""
    unit = Unit(unit) if isinstance(unit, str) else unit
    counts = {"documents": 0, "chars": 0, "dropped_too_large": 0, "empty_units": 0, "units_read": 1}
    pending = pa.table({"doc_id": [], "text": []}, schema=schemas.DOCUMENTS)
    for table in read_unit(unit, cfg, counts):
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
    counts["empty_units"] = int(counts["documents"] == 0)
    yield counts


class WriteDocuments:
    """``map_units``' worker for read: the read task's pieces are the shards already (its counts
    travel on the unit's marker), so the task only writes them."""

    def __call__(self, table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        return table, {}


def run_read(cfg: ReadConfig, inputs: str | list[str], root: str, *, concurrency: int | None = None) -> str:
    """Read ``inputs`` (URIs, globs or directories) into ``{root}/read/{key}/``; returns its URI.
    A Ray Data task per unit (``plan_units``) reads it and writes its shards as
    ``part-{unit:05d}-{k:04d}.parquet``."""
    patterns = [inputs] if isinstance(inputs, str) else list(inputs)
    if not patterns:
        raise ValueError("read: no input given")
    files = sorted({f for p in patterns for f in storage.expand(p)})
    identity = input_identity(files)

    def produce(writer: stage_store.StageWriter) -> None:
        started = time.time()
        units = plan_units(identity, cfg)
        counts, _ = stage_exec.map_units(writer, units, read=read_shards, read_args=(cfg,), worker=WriteDocuments,
                                         schema=schemas.DOCUMENTS,
                                         desc="read", concurrency=concurrency)
        if not counts.get("documents"):
            raise ValueError(f"read: the corpus is empty: {len(files)} file(s) from {patterns} hold no document")
        writer.stats.update(counts, files=len(files), units=len(units),
                            input_bytes=sum(e[1] or 0 for e in identity), read_seconds=round(time.time() - started, 3))

    return stage_store.run_stage(root, STAGE, cfg, (identity,), produce, version=2)
