"""DOCUMENTS -> DOCUMENTS, cleaned and de-duplicated across the whole corpus.

Per document (pure ``core``): Unicode normalisation; invalid UTF-8 (U+FFFD) and control characters
removed; per line, whitespace collapsed and markup/boilerplate lines dropped; then the document is
dropped, with a reason, when it looks binary, is shorter than ``min_chars`` or longer than
``max_chars``. Exact duplicates (same cleaned text) are removed across the corpus by hash
partitioning (``find_duplicates``: Ray Data's hash shuffle on the text hash into ``num_buckets``
blocks, so no machine holds every hash; no id set on the driver); the copy with the smallest
``doc_id`` is kept. Counts of every drop are written to stats.json.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import string
import unicodedata
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import parquet_files, schemas, stage_exec, stage_store, storage

STAGE = "clean"
REASONS = ("binary", "too_short", "too_long", "duplicate")

# Work columns carried between the core and the dedup step (not written).
WORK = pa.schema(list(schemas.DOCUMENTS) + [
    pa.field("drop_reason", pa.string()), pa.field("text_hash", pa.string()),
    pa.field("bucket", pa.int32()), pa.field("num_markup_lines", pa.int32()),
    pa.field("num_bad_chars", pa.int64()),
])
# A WORK file: the rows of one input shard, and that shard's position (where pass 2 sends them back).
WORK_FILE = pa.schema(list(WORK) + [pa.field("shard", pa.int32())])


@dataclasses.dataclass(frozen=True)
class CleanConfig:
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC"
    """Unicode normalisation form."""
    min_chars: int = 200
    """Documents shorter than this after cleaning are dropped ("too_short")."""
    max_chars: int = 2_000_000
    """Documents longer than this are dropped ("too_long"): one huge line is not prose."""
    max_bad_char_ratio: float = 0.1
    """Documents whose share of invalid or control characters exceeds this are dropped ("binary")."""
    min_alpha_ratio: float = 0.6
    """Lines whose non-space characters are less than this share letters are dropped as markup."""
    num_buckets: int = 16
    """Hash partitions of Ray Data's shuffles for corpus-wide de-duplication: a fixed count (memory
    per partition is the corpus' keys / num_buckets), never derived from the corpus size."""

    def __post_init__(self) -> None:
        if self.num_buckets < 1:
            raise ValueError(f"clean: num_buckets must be >= 1, got {self.num_buckets}")


_BAD = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_LETTER = re.compile(r"[^\W\d_]+")
_ASCII_LETTERS = string.ascii_letters.encode("ascii")
# rst/markdown/html/wiki markup and page boilerplate, recognised from the line's start or shape.
_MARKUP = re.compile(
    r"^(\.\. |:[\w-]+:|<[^>]*>|\{\{|\||\+[-=+]+|[-=*#~^\"'`_+.]{3,}$|>>>|\$ |#include|```|"
    r"(copyright|all rights reserved|table of contents|previous topic|next topic|this page)\b)",
    re.IGNORECASE,
)


def _clean_line(line: str, min_alpha_ratio: float) -> str | None:
    # str.split() and the regex's \s are the same whitespace (CPython's Py_UNICODE_ISSPACE)
    words = line.split()
    if not words:
        return None
    line = " ".join(words)
    if _MARKUP.match(line):
        return None
    visible = "".join(words)
    if visible.isascii():  # ASCII's letters are a-z and A-Z: count them in C
        num_letters = len(visible) - len(visible.encode("ascii").translate(None, _ASCII_LETTERS))
    else:
        num_letters = len(visible) - len(_LETTER.sub("", visible))
    if num_letters < min_alpha_ratio * len(visible):
        return None
    return line


def clean_text(text: str, cfg: CleanConfig) -> tuple[str, str, int, int]:
    """-> (cleaned text, drop reason or "", markup lines dropped, bad characters removed)."""
    if len(text) > cfg.max_chars:
        return "", "too_long", 0, 0
    num_bad = len(_BAD.findall(text))
    if text and num_bad > cfg.max_bad_char_ratio * len(text):
        return "", "binary", 0, num_bad
    text = unicodedata.normalize(cfg.unicode_form, _BAD.sub("", text) if num_bad else text)
    lines, num_markup = [], 0
    for raw in text.split("\n"):
        line = _clean_line(raw, cfg.min_alpha_ratio)
        if line is None:
            num_markup += bool(raw.strip())
        else:
            lines.append(line)
    out = "\n".join(lines)
    if len(out) < cfg.min_chars:
        return "", "too_short", num_markup, num_bad
    return out, "", num_markup, num_bad


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def core(table: pa.Table, cfg: CleanConfig) -> pa.Table:
    """DOCUMENTS -> WORK rows: cleaned text, drop reason ("" = kept), hash and dedup bucket."""
    schemas.check_schema(table, schemas.DOCUMENTS, "clean")
    cols: dict[str, list] = {k: [] for k in ("text", "drop_reason", "text_hash", "bucket", "num_markup_lines", "num_bad_chars")}
    for text in table.column("text").to_pylist():
        out, reason, num_markup, num_bad = clean_text(text, cfg)
        digest = text_hash(out) if not reason else ""
        cols["text"].append(out)
        cols["drop_reason"].append(reason)
        cols["text_hash"].append(digest)
        cols["bucket"].append(int(digest[:8], 16) % cfg.num_buckets if digest else 0)
        cols["num_markup_lines"].append(num_markup)
        cols["num_bad_chars"].append(num_bad)
    return pa.table({"doc_id": table.column("doc_id"), **cols}, schema=WORK)


def mark_duplicates(table: pa.Table) -> pa.Table:
    """Within rows (doc_id, drop_reason, text_hash) holding every copy of each hash: all but the copy
    with the smallest doc_id get drop_reason "duplicate"; returned sorted by (hash, doc_id)."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, sort_keys=[("text_hash", "ascending"), ("doc_id", "ascending")])
    t = table.take(order)
    hashes = t.column("text_hash").to_numpy(zero_copy_only=False)
    kept = t.column("drop_reason").to_numpy(zero_copy_only=False) == ""
    same_as_prev = np.zeros(len(hashes), dtype=bool)
    # rows already dropped carry hash "", so they never match a kept row
    same_as_prev[1:] = (hashes[1:] == hashes[:-1]) & kept[1:] & kept[:-1]
    reason = np.where(same_as_prev, "duplicate", t.column("drop_reason").to_numpy(zero_copy_only=False))
    return t.set_column(t.schema.get_field_index("drop_reason"), "drop_reason", pa.array(reason, pa.string()))


def duplicates_in_block(block: pa.Table) -> pa.Table:
    """Dedup's reduce side, on a block holding every kept copy of each of its hashes (Ray Data's hash
    shuffle on ``text_hash``): -> (doc_id, shard) of every copy but the first."""
    marked = mark_duplicates(block.select(["doc_id", "drop_reason", "text_hash", "shard"]))
    dup = marked.filter(pc.equal(marked.column("drop_reason"), "duplicate"))
    return pa.table({"doc_id": dup.column("doc_id"), "shard": dup.column("shard")}, schema=DUPLICATE)


DUPLICATE = pa.schema([("doc_id", pa.string()), ("shard", pa.int32())])


def find_duplicates(work_files: list[str], num_buckets: int):
    """A Ray Dataset of (doc_id, shard) of every duplicate but the first copy. The kept rows'
    (doc_id, hash, shard) go through Ray Data's hash shuffle on the hash into ``num_buckets`` blocks,
    so every copy of a text meets in one block and no process holds every hash."""
    keys = stage_exec.read_files(work_files, columns=["doc_id", "drop_reason", "text_hash", "shard"])
    from ray.data.expressions import col

    kept = keys.filter(expr=col("drop_reason") == "")
    return stage_exec.shuffle_groups(kept, "text_hash", num_buckets, duplicates_in_block)


def mark_found_duplicates(table: pa.Table, duplicates: pa.Array | list[str]) -> pa.Table:
    if not len(duplicates):
        return table
    is_dup = pc.is_in(table.column("doc_id"), value_set=pa.array(duplicates, pa.string()))
    reason = pc.if_else(is_dup, "duplicate", table.column("drop_reason"))
    return table.set_column(table.schema.get_field_index("drop_reason"), "drop_reason", reason)


class CleanShard:
    """Pass 1's worker: ``core`` on one shard, every input row kept (for the counts) with its shard."""

    keep_unit = True

    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        work = core(table.drop_columns(["_unit"]), self.cfg)
        return work.append_column("shard", table.column("_unit")), {}


def finish_shard(work: pa.Table, duplicates: pa.Array | list[str]) -> tuple[pa.Table, dict[str, int]]:
    """Pass 2 on one shard: mark its corpus-wide duplicates, count every drop, keep the rest."""
    table = mark_found_duplicates(work, duplicates)
    stats = {"documents_in": table.num_rows,
             "markup_lines_dropped": pc.sum(table.column("num_markup_lines")).as_py() or 0,
             "bad_chars_removed": pc.sum(table.column("num_bad_chars")).as_py() or 0}
    for reason in REASONS:
        stats[f"dropped.{reason}"] = pc.sum(pc.equal(table.column("drop_reason"), reason)).as_py() or 0
    kept = table.filter(pc.equal(table.column("drop_reason"), ""))
    stats["documents"] = kept.num_rows
    stats["chars"] = pc.sum(pc.utf8_length(kept.column("text"))).as_py() or 0
    return kept.select(schemas.DOCUMENTS.names), stats


def finish_block(block: pa.Table, work_files: list[str], tmp: str, env: dict[str, str]) -> pa.Table:
    """Pass 2, on a block of Ray Data's hash shuffle on ``shard``: for each shard in it (every shard
    comes with one null-id row, so each appears once), its WORK file and its duplicate ids -> its
    output file ``part-{shard:05d}-0000.parquet``; -> one row per shard (name, bytes, rows, stats)."""
    storage.apply_env(env)
    block = block.take(pc.sort_indices(block, sort_keys=[("shard", "ascending")]))
    shards = block.column("shard").to_numpy()
    out = stage_exec.written_rows()
    for lo, hi in _runs(shards):
        shard = int(shards[lo])
        ids = block.column("doc_id").slice(lo, hi - lo).drop_null()
        table, stats = finish_shard(parquet_files.read_parquet(work_files[shard]), ids)
        stage_exec.write_output(out, tmp, f"part-{shard:05d}-0000.parquet", table, schemas.DOCUMENTS, shard, 0, stats)
    return pa.table(out, schema=stage_exec.WRITTEN)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    bounds = np.flatnonzero(np.diff(values)) + 1
    return list(zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(values)].tolist()))


def all_dropped_message(dropped: dict[str, int], cfg: CleanConfig) -> str:
    """Why a corpus lost every document, with the one change that could help (if any)."""
    hints = {
        "binary": "most documents are not text (invalid UTF-8, control bytes or markup): check that data.inputs "
                  "names text files (.txt, .jsonl, .parquet, optionally compressed)",
        "too_short": f"most documents are shorter than data.clean.min_chars={cfg.min_chars}: lower it if they are "
                     "prose, or check that documents are separated by blank lines",
        "too_long": f"most documents are longer than data.clean.max_chars={cfg.max_chars}",
        "duplicate": "the documents are copies of one another",
    }
    main = max(REASONS, key=lambda r: dropped.get(r, 0))
    counts = ", ".join(f"{r} {n}" for r, n in dropped.items() if n)
    return f"clean: every document was dropped ({counts}); {hints[main]}"


def run_clean(cfg: CleanConfig, documents_uri: str, root: str, *, concurrency: int | None = None) -> str:
    """Clean the DOCUMENTS at ``documents_uri`` into ``{root}/clean/{key}/``; returns its URI.

    Pass 1 (a Ray Data task per input shard, ``CleanShard``) writes WORK files into the stage's
    temporary directory; ``find_duplicates`` shuffles their keys on the text hash; pass 2 shuffles the
    duplicates (plus one row per shard) on the shard, and each block finishes its shards."""
    import ray.data

    def produce(writer: stage_store.StageWriter) -> None:
        units = stage_store.shard_units(documents_uri)
        _, work = stage_exec.map_units(writer, units, worker=CleanShard, worker_args=(cfg,), schema=WORK_FILE,
                                       desc="clean", prefix="work", record=False, concurrency=concurrency)
        if len(work) != len(units):  # every shard has rows, so each writes a WORK file
            raise RuntimeError(f"clean: {len(units)} shards gave {len(work)} work files")
        every = ray.data.from_arrow(pa.table({"doc_id": pa.nulls(len(units), pa.string()),
                                              "shard": pa.array(range(len(units)), pa.int32())}, schema=DUPLICATE))
        finished = stage_exec.shuffle_groups(find_duplicates(work, cfg.num_buckets).union(every), "shard",
                                             cfg.num_buckets, finish_block, (work, writer.tmp, storage.capture_env()))
        totals = stage_exec.record_written(writer, stage_exec.collect(finished))
        for uri in work:
            storage.remove_tree(uri)
        stats = {k: v for k, v in totals.items() if not k.startswith("dropped.")}
        stats["dropped"] = {r: totals.get(f"dropped.{r}", 0) for r in REASONS}
        if not stats.get("documents"):
            raise ValueError(all_dropped_message(stats["dropped"], cfg))
        writer.stats.update(stats)

    return stage_store.run_stage(root, STAGE, cfg, (stage_store.input_identity(documents_uri),), produce, version=3)
