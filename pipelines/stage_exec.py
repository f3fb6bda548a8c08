"""How a data stage runs on Ray Data: a read of work units, a callable class per worker, workers
that write their own output files.

A stage's input is cut into ``Unit``s (a parquet shard, a row-group range of a parquet file, a byte
range of a text file), planned on the driver from sizes alone. ``map_units`` builds one Ray Data
pipeline:

- a read (``UnitSource``, a ``Datasource`` with one read task per unit) whose task reads its unit and
  yields it as one or more *pieces* (tables), each tagged with ``(unit, piece, rows)``;
- ``map_batches`` with a callable class (``_PieceWriter``), in plain Ray Data tasks on Ray's warm
  worker processes: for every piece it computes ``worker(table) -> (table, stats)`` and writes the
  result itself into the stage's temporary directory as ``{prefix}-{unit:05d}-{piece:04d}.parquet``.
  A worker with a ``costly_setup`` (tokenize loads a tokenizer in ``__init__``) is built once per
  worker process and stage attempt, and kept for the process's next blocks (``_stage_worker``).

Tasks rather than an actor pool: a task lost with its node is resubmitted to any node that has a
CPU. A lost actor must be re-created as that same actor, with its queued calls, and on a cluster
that just shrank it waits for a free CPU that its own pool holds: with Ray 2.60, killing one of 4
nodes mid-stage stalled an actor-pool map for 40-100 s and sometimes for good (ray#26991), where
the same map on tasks finished as if one CPU fewer. Actor pools also cost seconds per stage to start.

Only file names, sizes and counts come back to the driver. Output file ``(u, p)`` is a function of
piece ``(u, p)`` alone, so the bytes do not depend on the number of workers, blocks or nodes. A piece
must reach its writer whole: blocks are never split below a piece (``stage_data_context``), and a
writer that sees part of a piece raises rather than write a partial file.

Corpus-wide steps (exact dedup, NSP partitions) use Ray Data's own hash shuffle
(``Dataset.repartition(keys=...)``, the one ``groupby().map_groups`` is built on): every row of a key
lands in one block, so a block-wise pure function sees whole groups.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import pickle
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from pipelines import allocator, storage
from pipelines.parquet_files import read_parquet, write_parquet

allocator.configure()  # every process that runs a stage imports this module

TAGS = ("_unit", "_piece", "_rows", "_stats")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One read task's share of the input: ``uri`` from ``start`` to ``stop`` (bytes of a text file,
    row groups of a parquet file; ``stop=None``: to the end)."""

    uri: str
    start: int = 0
    stop: int | None = None


def tag(table: pa.Table, unit: int, piece: int) -> pa.Table:
    n = table.num_rows
    return (table.append_column("_unit", pa.array(np.full(n, unit, np.int32)))
            .append_column("_piece", pa.array(np.full(n, piece, np.int32)))
            .append_column("_rows", pa.array(np.full(n, n, np.int64)))
            .append_column("_stats", pa.nulls(n, pa.string())))


class UnitSource:
    """A Ray Data ``Datasource`` of units: read task ``i`` runs ``read_fn(units[i], *read_args)``,
    which yields the unit's pieces (tables) and, optionally, last, a dict of the read's own counts.
    The task ends the unit with one marker row that carries those counts, so every unit reports,
    even one that yields nothing."""

    def __new__(cls, *args, **kwargs):  # subclass lazily: importing ray.data costs seconds
        from ray.data.datasource import Datasource

        if not issubclass(cls, Datasource):
            cls = type("UnitSource", (cls, Datasource), {})
        return object.__new__(cls)

    def __init__(self, units: list[Unit], read_fn: Callable[..., Iterable[pa.Table]], read_args: tuple,
                 env: dict[str, str], tagged: bool = True):
        self.units, self.read_fn, self.read_args, self.env, self.tagged = units, read_fn, read_args, env, tagged

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_name(self) -> str:
        return "ReadUnits"

    def get_read_tasks(self, parallelism: int, **kwargs) -> list:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        def task(index: int, unit: Unit):
            read_fn, read_args, env, tagged = self.read_fn, self.read_args, self.env, self.tagged

            def read() -> Iterator[pa.Table]:
                storage.apply_env(env)
                if not tagged:  # a plain read: the tables as they come
                    yield from (t for t in read_fn(unit, *read_args) if isinstance(t, pa.Table) and t.num_rows)
                    return
                schema, counts = None, {}
                for piece, item in enumerate(read_fn(unit, *read_args)):
                    if isinstance(item, dict):
                        counts = item
                    elif item.num_rows:
                        schema = item.schema
                        yield tag(item, index, piece)
                yield _marker(index, schema, counts)  # the unit's end (and how an empty unit reports)

            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=[unit.uri], exec_stats=None)
            return ReadTask(read, meta)

        return [task(i, u) for i, u in enumerate(self.units)]


def _marker(unit: int, schema: pa.Schema | None, counts: dict[str, Any]) -> pa.Table:
    """The row that closes a unit: ``_piece`` = -1, the read's counts in ``_stats``, data columns
    null (the same schema as the unit's pieces, so Ray may put them in one block)."""
    schema = schema or pa.schema([])
    nulls = pa.Table.from_arrays([pa.nulls(1, f.type) for f in schema], schema=schema) if len(schema) else None
    tags = {"_unit": pa.array([unit], pa.int32()), "_piece": pa.array([-1], pa.int32()),
            "_rows": pa.array([0], pa.int64()), "_stats": pa.array([json.dumps(counts)], pa.string())}
    if nulls is None:
        return pa.table(tags)
    for name, column in tags.items():
        nulls = nulls.append_column(name, column)
    return nulls


_BUILT: dict[tuple, Any] = {}  # this worker process's costly worker: {(class, args, stage attempt): worker}


def _stage_worker(worker_cls, worker_args: tuple, tmp: str):
    """``worker_cls(*worker_args)``; one with ``costly_setup`` is built once per worker process and
    stage attempt (``tmp``, the attempt's temporary directory), then reused: a process keeps the last one."""
    if not getattr(worker_cls, "costly_setup", False):
        return worker_cls(*worker_args)
    key = (worker_cls.__module__, worker_cls.__qualname__, hashlib.sha256(pickle.dumps(worker_args)).hexdigest(), tmp)
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = worker_cls(*worker_args)
    return _BUILT[key]


class _PieceWriter:
    """The callable class of ``map_units``: gets the stage's worker (``_stage_worker``), then computes
    and writes every piece of the blocks it is given. A worker with ``keep_unit = True`` gets the
    ``_unit`` column (the unit's position) with the piece's rows."""

    def __init__(self, worker_cls, worker_args: tuple, schema: pa.Schema, tmp: str, prefix: str,
                 env: dict[str, str]):
        storage.apply_env(env)
        self.worker = _stage_worker(worker_cls, worker_args, tmp)
        self.schema, self.tmp, self.prefix = schema, tmp, prefix

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = written_rows()
        units = batch.column("_unit").to_numpy()
        pieces = batch.column("_piece").to_numpy()
        keys = units.astype(np.int64) << 32 | (pieces.astype(np.int64) & 0xFFFFFFFF)
        bounds = np.flatnonzero(np.diff(keys)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(keys)]):
            unit, piece = int(units[lo]), int(pieces[lo])
            if piece < 0:  # a unit's end marker, with the read's counts
                for key, value in (("unit", unit), ("piece", -1), ("name", ""), ("bytes", 0), ("rows", 0),
                                   ("stats", batch.column("_stats")[int(lo)].as_py())):
                    out[key].append(value)
                continue
            part = batch.slice(lo, hi - lo)
            expected = part.column("_rows")[0].as_py()
            if part.num_rows != expected:
                raise RuntimeError(f"piece {piece} of unit {unit} reached its writer in parts ({part.num_rows} of "
                                   f"{expected} rows); blocks must not be split below a piece")
            keep = ["_unit"] if getattr(self.worker, "keep_unit", False) else []
            table, stats = self.worker(part.drop_columns([t for t in TAGS if t not in keep]))
            write_output(out, self.tmp, f"{self.prefix}-{unit:05d}-{piece:04d}.parquet", table, self.schema, unit,
                         piece, stats)
        return pa.table(out, schema=WRITTEN)


def _write_pieces(batch: pa.Table, *writer_args) -> pa.Table:
    """``_PieceWriter`` as a Ray Data task function."""
    return _PieceWriter(*writer_args)(batch)


def written_rows() -> dict[str, list]:
    """Empty columns of ``WRITTEN``, for ``write_output`` to fill."""
    return {name: [] for name in WRITTEN.names}


def write_output(out: dict[str, list], tmp: str, name: str, table: pa.Table, schema: pa.Schema, unit: int,
                 piece: int, stats: dict[str, Any]) -> None:
    """Write ``table`` (selected and cast to ``schema``, for stable bytes) as ``{tmp}/{name}`` unless it
    is empty, and append its ``WRITTEN`` row (no name for an empty table) to ``out``."""
    write_output_tables(out, tmp, name, [table], schema, unit, piece, stats)


def write_output_tables(out: dict[str, list], tmp: str, name: str, tables: Iterable[pa.Table], schema: pa.Schema,
                        unit: int, piece: int, stats: dict[str, Any],
                        table_stats: Callable[[pa.Table], dict[str, Any]] | None = None) -> None:
    """``write_output`` of one file made of ``tables`` (a row group or more each), each written as it
    comes straight into the file (``storage.atomic_output``), so a lazy iterable is never all in
    memory, nor is the file; ``table_stats(table)`` of each is added to ``stats``. Empty tables add
    nothing; a file of no rows is not written."""
    stats = dict(stats)

    def nonempty() -> Iterator[pa.Table]:
        for table in tables:
            if table.num_rows:
                if table_stats is not None:
                    add_stats(stats, table_stats(table))
                yield table

    parts = nonempty()
    first = next(parts, None)
    rows = num_bytes = 0
    if first is not None:
        uri = storage.join(tmp, name)
        with storage.atomic_output(uri) as sink:
            rows = write_parquet(itertools.chain([first], parts), schema, sink)
            num_bytes = sink.tell()
    for key, value in (("unit", unit), ("piece", piece), ("name", name if rows else ""),
                       ("bytes", num_bytes), ("rows", rows), ("stats", json.dumps(stats))):
        out[key].append(value)


class Apply:
    """The worker of a stage whose function needs no set-up: ``fn(table, *args) -> (table, stats)``."""

    def __init__(self, fn: Callable[..., tuple[pa.Table, dict[str, Any]]], *args: Any):
        self.fn, self.args = fn, args

    def __call__(self, table: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        return self.fn(table, *self.args)


WRITTEN = pa.schema([("unit", pa.int32()), ("piece", pa.int32()), ("name", pa.string()), ("bytes", pa.int64()),
                      ("rows", pa.int64()), ("stats", pa.string())])


def add_stats(totals: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Add one piece's (or partition's) numeric stats into ``totals``; ``max_*`` keys keep the maximum."""
    for key, value in stats.items():
        totals[key] = max(totals.get(key, value), value) if key.startswith("max_") else totals.get(key, 0) + value
    return totals


def map_units(writer, units: list[Unit], *, read: Callable[..., Iterable[pa.Table]] | None = None,
              read_args: tuple = (), worker, worker_args: tuple = (), schema: pa.Schema, desc: str = "",
              prefix: str = "part", record: bool = True, concurrency: int | None = None
              ) -> tuple[dict[str, Any], list[str]]:
    """Run a stage over ``units`` (see the module docstring): each unit is read by ``read(unit, *read_args)``
    (default ``read_shard``: a stage output's parquet file) and its pieces go through ``worker(*worker_args)``
    (a callable class, built once per worker process), whose tables are written as files of ``schema``.
    ``record=False`` writes work files that are not part of the stage's output. Returns the sum of every
    piece's stats and the URIs of the files written, in (unit, piece) order."""
    read_fn, worker_cls = read or read_shard, worker
    import ray.data

    if not units:
        raise ValueError(f"{writer.stage}: no input")
    env = storage.capture_env()
    ds = ray.data.read_datasource(UnitSource(units, read_fn, read_args, env), override_num_blocks=len(units))
    writer_args = (worker_cls, worker_args, schema, writer.tmp, prefix, env)
    ds = ds.map_batches(_write_pieces, fn_args=writer_args, batch_size=None, batch_format="pyarrow", num_cpus=1,
                        compute=ray.data.TaskPoolStrategy(size=concurrency))
    totals: dict[str, Any] = {}
    files: list[tuple[int, int, str, int, int]] = []
    done = 0
    with progress_bar(desc or writer.stage, len(units), "units") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                add_stats(totals, json.loads(row["stats"]))
                if row["piece"] < 0:
                    done += 1
                    bar(done)
                elif row["name"]:
                    files.append((row["unit"], row["piece"], row["name"], row["bytes"], row["rows"]))
    files.sort()
    if record:
        for _, _, name, num_bytes, rows in files:
            writer.add_file(name, num_bytes, rows)
    return totals, [storage.join(writer.tmp, f[2]) for f in files]


@contextlib.contextmanager
def progress_bar(desc: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
    """The stage's live console line (``pipelines.console``); yields ``update(done)``."""
    from pipelines import console

    console.progress(desc, 0, total, unit)
    yield lambda done: console.progress(desc, done, total, unit)


SHUFFLE_MAP_BATCH_BYTES = 64 << 20
"""Input bytes one hash-shuffle map task takes (Ray Data's ``shuffle_input_batch_bytes``). Ray's
default, 1 GiB per node, made one map task per node below that: at 2 GB on 4 nodes each held
~450 MB of tokens and was the stage's largest worker (1,755 MB RSS), growing with the corpus."""


@contextlib.contextmanager
def stage_data_context() -> Iterator[None]:
    """For the Ray Datasets built inside (a Dataset copies the DataContext when created): rows keep
    their order; the operator resource reservation is off (it kept part of the CPUs for operators
    downstream, so a single map operator ran one task at a time on 2 CPUs); output blocks are
    allowed to be large (up to 2 GiB), so a read task's piece reaches its writer as one block; a
    shuffle's map tasks take ``SHUFFLE_MAP_BATCH_BYTES`` each, so their memory does not grow with
    the corpus (their number does, linearly); and shuffle shards are not compressed, so a reducer
    reads its shards in place from the object store instead of decompressing a private copy (2 GB
    on 4 nodes: the nsp reducer's private memory 769 -> 430 MB; the store's peak 1.78 -> 2.35 GB)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    old = (ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled, ctx.target_max_block_size,
           ctx.shuffle_input_batch_bytes, ctx.shuffle_compression)
    ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled = True, False
    ctx.shuffle_compression = None
    ctx.target_max_block_size = max(old[2] or 0, 2 << 30)
    ctx.shuffle_input_batch_bytes = SHUFFLE_MAP_BATCH_BYTES
    try:
        yield
    finally:
        (ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled, ctx.target_max_block_size,
         ctx.shuffle_input_batch_bytes, ctx.shuffle_compression) = old


def shuffle_groups(ds, key: str, num_partitions: int, fn: Callable[..., pa.Table], fn_args: tuple = ()):
    """Ray Data's hash shuffle on ``key`` into ``num_partitions`` blocks, then ``fn(block, *fn_args)``
    on each: every row of a key is in the block ``fn`` sees (as in ``groupby().map_groups``, without
    a Python call per group)."""
    shuffled = ds.repartition(num_partitions, keys=[key])
    return shuffled.map_batches(fn, fn_args=fn_args, batch_size=None, batch_format="pyarrow",
                                num_cpus=1)


def read_shard(unit: Unit, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """``map_units``' reader for stage outputs: the whole shard as one piece."""
    yield read_parquet(unit.uri, columns)


def read_files(files: list[str], columns: list[str] | None = None):
    """A Ray Dataset over parquet files (any storage URI), in file order: a read task per file.
    (``ray.data.read_parquet`` first reads every footer in helper actors that are not restarted
    when their node is lost, which failed the stage; a task per file is simply retried.)"""
    import ray.data

    if not files:
        raise ValueError("no parquet file to read")
    source = UnitSource([Unit(f) for f in files], read_shard, (columns,), storage.capture_env(), tagged=False)
    return ray.data.read_datasource(source, override_num_blocks=len(files))


def record_written(writer, written: pa.Table) -> dict[str, Any]:
    """Record the files a shuffle's blocks wrote (rows of ``WRITTEN``) in ``writer``; -> summed stats."""
    totals: dict[str, Any] = {}
    for row in sorted(written.to_pylist(), key=lambda r: (r["unit"], r["piece"])):
        add_stats(totals, json.loads(row["stats"]))
        if row["name"]:
            writer.add_file(row["name"], row["bytes"], row["rows"])
    return totals


def collect(ds, batch_format: str = "pyarrow") -> pa.Table:
    """A small dataset's rows on the driver (stats and file lists only)."""
    tables = list(ds.iter_batches(batch_size=None, batch_format=batch_format))
    return pa.concat_tables(tables) if tables else pa.table({})
