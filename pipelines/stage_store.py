"""Where stage outputs live and how they are committed: ``{root}/{stage}/{key}/``.

``key`` is the ``config_hash`` of the stage's config and its inputs' identities. A stage writes into
``{root}/{stage}/_tmp-{key}-{random}/``, then ``commit`` moves that to the final directory, writes
``stats.json`` and, last, ``manifest.json``. Only a directory with a manifest is complete: a run killed
half-way leaves none and its directory is removed and redone, never read. Data files are named
``part-00000.parquet``... in row order; each is made from one input shard (``map_shards``) or one
partition, so the bytes depend only on the input, not on how many Ray workers or blocks produced them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
import uuid
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.typed_config import config_hash, to_dict

MANIFEST = "manifest.json"
STATS = "stats.json"


def output_uri(root: str, stage: str, key: str) -> str:
    return storage.join(root, stage, key)


def is_complete(uri: str) -> bool:
    """True when the stage output at ``uri`` was committed (its manifest exists)."""
    return storage.exists(storage.join(uri, MANIFEST))


def read_manifest(uri: str) -> dict[str, Any]:
    if not is_complete(uri):
        raise FileNotFoundError(f"{uri} is not a completed stage output (no {MANIFEST})")
    return storage.read_json(storage.join(uri, MANIFEST))


def read_stats(uri: str) -> dict[str, Any]:
    return storage.read_json(storage.join(uri, STATS))


def data_files(uri: str) -> list[str]:
    """URIs of a completed output's parquet shards, in row order."""
    return [storage.join(uri, f["name"]) for f in read_manifest(uri)["files"] if f["name"].endswith(".parquet")]


def input_identity(uri: str) -> str:
    """What a downstream key hashes for an input: ``stage/key`` of a stage output (so moving the
    root keeps keys), else the URI itself."""
    if is_complete(uri):
        m = read_manifest(uri)
        return f"{m['stage']}/{m['key']}"
    return uri


def stage_key(cfg: Any, *inputs: Any) -> str:
    return config_hash(cfg, *inputs)


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """All shards of a completed output as one table (small outputs and tests)."""
    tables = [read_parquet(f, columns) for f in data_files(uri)]
    if not tables:
        raise ValueError(f"{uri} holds no data files")
    return pa.concat_tables(tables)


def read_dataset(uri: str, columns: list[str] | None = None):
    """A Ray Dataset over a completed output's shards (in row order)."""
    import ray.data

    files = data_files(uri)
    if not files:
        raise ValueError(f"{uri} holds no data files")
    fs, _ = storage.filesystem(files[0])
    return ray.data.read_parquet([storage.filesystem(f)[1] for f in files], filesystem=fs, columns=columns,
                                 shuffle=None)


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table.combine_chunks(), sink, compression="zstd", row_group_size=1 << 20)
    return sink.getvalue()


@dataclasses.dataclass
class StageWriter:
    """Collects a stage's files under a temporary directory and commits them."""

    root: str
    stage: str
    key: str
    config: Any
    inputs: tuple[Any, ...]
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    files: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.final = output_uri(self.root, self.stage, self.key)
        self.tmp = storage.join(self.root, self.stage, f"_tmp-{self.key}-{uuid.uuid4().hex[:8]}")
        self.started = time.time()
        storage.make_dirs(self.tmp)

    def write_bytes(self, name: str, data: bytes, num_rows: int | None = None) -> None:
        storage.write_bytes_atomic(storage.join(self.tmp, name), data)
        self.files.append({"name": name, "bytes": len(data), "rows": num_rows})

    def add_file(self, name: str, num_bytes: int, num_rows: int | None) -> None:
        """Record a file that a worker wrote into ``self.tmp`` itself."""
        self.files.append({"name": name, "bytes": num_bytes, "rows": num_rows})
        self.files.sort(key=lambda f: f["name"])

    def write_table(self, table: pa.Table, schema: pa.Schema | None = None) -> None:
        """Write one shard; ``schema`` selects and casts (and drops metadata) for stable bytes."""
        if schema is not None:
            table = table.select(schema.names).cast(schema)
        name = f"part-{sum(f['name'].startswith('part-') for f in self.files):05d}.parquet"
        self.write_bytes(name, table_to_parquet_bytes(table), table.num_rows)

    def commit(self) -> str:
        """Move the temporary directory in place, write stats, then the manifest (last)."""
        if storage.exists(self.final):
            storage.remove_tree(self.final)  # an earlier run killed before its manifest
        storage.move_tree(self.tmp, self.final)
        self.stats.setdefault("rows", sum(f["rows"] or 0 for f in self.files))
        self.stats.setdefault("bytes", sum(f["bytes"] for f in self.files))
        self.stats["seconds"] = round(time.time() - self.started, 3)
        storage.write_json_atomic(storage.join(self.final, STATS), {"stage": self.stage, **self.stats})
        manifest = {"stage": self.stage, "key": self.key, "config": to_dict(self.config),
                    "inputs": [to_dict(i) for i in self.inputs], "files": self.files,
                    "num_rows": sum(f["rows"] or 0 for f in self.files)}
        storage.write_json_atomic(storage.join(self.final, MANIFEST), manifest)
        return self.final

    def abort(self) -> None:
        storage.remove_tree(self.tmp)


def clean_stale(root: str, stage: str, key: str) -> None:
    """Remove leftovers of killed runs of this (stage, key): temp dirs and an uncommitted final dir."""
    stage_dir = storage.join(root, stage)
    if not storage.exists(stage_dir):
        return
    final = output_uri(root, stage, key)
    if storage.exists(final) and not is_complete(final):
        storage.remove_tree(final)
    fs, path = storage.filesystem(stage_dir)
    import pyarrow.fs as pafs

    for info in fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True)):
        if info.base_name.startswith(f"_tmp-{key}-"):
            fs.delete_dir(info.path) if info.type == pafs.FileType.Directory else fs.delete_file(info.path)


def run_stage(root: str, stage: str, cfg: Any, inputs: tuple[Any, ...],
              produce: Callable[[StageWriter], None], version: int = 1) -> str:
    """Skip if ``{root}/{stage}/{key}`` is complete; else clear leftovers, run ``produce(writer)``,
    commit. Returns the output URI. ``key`` hashes the stage name, its code ``version`` (bump it when
    the output of the same config changes), the config and the inputs' identities."""
    key = stage_key(stage, version, cfg, *inputs)
    final = output_uri(root, stage, key)
    if is_complete(final):
        return final
    clean_stale(root, stage, key)
    writer = StageWriter(root, stage, key, cfg, inputs)
    try:
        with stage_data_context():
            produce(writer)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


@contextlib.contextmanager
def stage_data_context() -> Iterator[None]:
    """For the Ray Datasets built inside (a Dataset copies the DataContext when created): rows keep
    their order, and the operator resource reservation is off. The reservation keeps part of the
    CPUs for operators downstream, so a single map operator (all ``map_shards`` runs) ran one task
    at a time on 2 CPUs: 40 tasks of 0.1 s took 4.5 s instead of 2.2 s."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled
    ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled = True, False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled = old


def map_shards(writer: StageWriter, shards: list[str], fn: Callable[..., tuple[Any, dict[str, Any]]],
               fn_args: tuple = (), *, schema: pa.Schema, desc: str = "", read_input: bool = True,
               prefix: str = "part", record: bool = True,
               concurrency: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """Run ``fn(shard table, *fn_args) -> (table or iterable of tables, stats)`` on every input shard
    in a Ray Data task that writes its result itself into the stage's temporary directory, as
    ``part-{shard:05d}.parquet`` (or ``part-{shard:05d}-{k:04d}.parquet`` for an iterable, written as
    it streams): no row passes through the driver. Output shard ``i`` comes from input shard ``i``
    alone, so the bytes do not depend on how many workers ran. Empty tables write no file.

    ``read_input=False``: ``fn`` gets the shard's URI instead of its table. ``concurrency`` caps the
    tasks running at once. ``prefix`` with ``record=False`` writes work files that are not part of
    the output. Returns the sum of every shard's numeric stats (``max_*`` keys take the maximum) and
    the URIs of the files written, in shard order."""
    import ray.data
    from tqdm import tqdm

    if not shards:
        raise ValueError(f"{writer.stage}: no input shard")
    items = [{"index": i, "uri": uri} for i, uri in enumerate(shards)]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _shard_task, fn_args=(fn, fn_args, schema, writer.tmp, read_input, prefix, storage.capture_env()),
        batch_size=1, batch_format="pyarrow", num_cpus=1, compute=ray.data.TaskPoolStrategy(size=concurrency))
    totals: dict[str, Any] = {}
    written: list[str] = []
    with tqdm(total=len(items), desc=desc or writer.stage, unit=" shards", mininterval=2.0, leave=False) as bar:
        for row in ds.iter_rows():  # in shard order (see stage_data_context)
            if row["rows"]:
                written.append(storage.join(writer.tmp, row["name"]))
                if record:
                    writer.add_file(row["name"], int(row["bytes"]), int(row["rows"]))
            add_stats(totals, json.loads(row["stats"]))
            bar.update(int(row["first"]))
    return totals, written


def hash_shuffle(inputs: list, split_fn: Callable[..., tuple[pa.Table, ...]], split_args: tuple,
                 reduce_fn: Callable[..., Any], reduce_args: tuple, num_partitions: int) -> list:
    """A hash shuffle in plain Ray tasks. Map side: ``split_fn(input, *split_args)`` returns one table
    per partition, for every input. Reduce side: ``reduce_fn(*reduce_args, partition, *tables)`` gets
    that partition's table from every input, once per partition. Only the reduce results come back
    to the driver, in partition order. It makes inputs x partitions objects."""
    import ray

    split = ray.remote(num_returns=num_partitions)(_split_task)
    per_input = [split.remote(split_fn, num_partitions, item, *split_args) for item in inputs]
    if num_partitions == 1:
        per_input = [[ref] for ref in per_input]  # num_returns=1 gives the ref itself, not a list
    reduce = ray.remote(reduce_fn)
    return ray.get([reduce.remote(*reduce_args, p, *[parts[p] for parts in per_input]) for p in range(num_partitions)])


def _split_task(split_fn, num_partitions: int, *args):
    parts = tuple(split_fn(*args))
    if len(parts) != num_partitions:
        raise ValueError(f"{split_fn.__name__} returned {len(parts)} partitions, expected {num_partitions}")
    return parts if num_partitions > 1 else parts[0]


def add_stats(totals: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Add one shard's (or partition's) numeric stats into ``totals``; ``max_*`` keys keep the maximum."""
    for key, value in stats.items():
        totals[key] = max(totals.get(key, value), value) if key.startswith("max_") else totals.get(key, 0) + value
    return totals


def _shard_task(batch: pa.Table, fn, fn_args: tuple, schema: pa.Schema, tmp: str, read_input: bool, prefix: str,
                env: dict[str, str]) -> pa.Table:
    """``map_shards``' task: one shard in, its file(s) written; -> a row per file, stats on the first."""
    storage.apply_env(env)
    index, uri = batch.column("index")[0].as_py(), batch.column("uri")[0].as_py()
    result, stats = fn(read_parquet(uri) if read_input else uri, *fn_args)
    single = isinstance(result, pa.Table)
    rows: dict[str, list] = {"name": [], "bytes": [], "rows": [], "stats": [], "first": []}
    for k, table in enumerate([result] if single else result):  # a stream is written as it comes
        name = f"{prefix}-{index:05d}.parquet" if single else f"{prefix}-{index:05d}-{k:04d}.parquet"
        num_bytes = 0
        if table.num_rows:
            data = table_to_parquet_bytes(table.select(schema.names).cast(schema))
            storage.write_bytes_atomic(storage.join(tmp, name), data)
            num_bytes = len(data)
        for key, value in (("name", name), ("bytes", num_bytes), ("rows", table.num_rows), ("stats", "{}"),
                           ("first", not rows["first"])):
            rows[key].append(value)
    if not rows["name"]:
        rows = {"name": [""], "bytes": [0], "rows": [0], "stats": ["{}"], "first": [True]}
    rows["stats"][0] = json.dumps(stats)  # complete now that the stream is consumed
    return pa.table(rows)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """One parquet file at ``uri``; errors name it."""
    try:
        return pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=columns)
    except Exception as e:
        raise ValueError(f"cannot read parquet {uri}: {type(e).__name__}: {e}") from e


def iter_arrow(ds, batch_size: int | None = 4096) -> Iterator[pa.Table]:
    """Batches of a Ray Dataset as pyarrow tables (build ``ds`` under ``preserve_order``)."""
    yield from ds.iter_batches(batch_size=batch_size, batch_format="pyarrow")
