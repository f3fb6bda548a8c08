"""Where stage outputs live and how they are committed: ``{root}/{stage}/{key}/``.

``key`` is the ``config_hash`` of the stage's config and its inputs' identities. A stage writes into
``{root}/{stage}/_tmp-{key}-{random}/``, then ``commit`` moves that to the final directory, writes
``stats.json`` and, last, ``manifest.json``. Only a directory with a manifest is complete: a run killed
half-way leaves none and its directory is removed and redone, never read. Data files are named
``part-...parquet`` in row order; each is made from one work unit or one partition (see
``pipelines.stage_exec``), so the bytes depend only on the input, not on how many Ray workers or
blocks produced them. ``add_file`` appends and the commit sorts once, so a commit is linear in files.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Callable, Iterator

import pyarrow as pa

from pipelines import identity, stage_exec, storage
from pipelines.parquet_files import read_parquet, table_to_parquet_bytes
from pipelines.typed_config import to_dict

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


def stage_key(stage: str, version: int, cfg: Any, *inputs: Any) -> str:
    """``pipelines.identity.output_identity`` of a stage output."""
    return identity.output_identity(stage, version, cfg, *inputs)


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """All shards of a completed output as one table (small outputs and tests)."""
    tables = [read_parquet(f, columns) for f in data_files(uri)]
    if not tables:
        raise ValueError(f"{uri} holds no data files")
    return pa.concat_tables(tables)


def read_dataset(uri: str, columns: list[str] | None = None):
    """A Ray Dataset over a completed output's shards (in row order)."""
    files = data_files(uri)
    if not files:
        raise ValueError(f"{uri} holds no data files")
    return stage_exec.read_files(files, columns)


ABORT_QUIET_S = 1.0
"""How long a failed stage's temporary directory must stay empty before ``StageWriter.abort`` returns."""


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
        """Record a file that a worker wrote into ``self.tmp`` itself (sorted by name at commit)."""
        self.files.append({"name": name, "bytes": num_bytes, "rows": num_rows})

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
        for uri in storage.list_files(self.tmp):
            # the half file of a writer killed mid-write (its node lost): the task's retry wrote the file itself
            if ".tmp-" in uri.rsplit("/", 1)[-1]:
                storage.remove_tree(uri)
        storage.move_tree(self.tmp, self.final)
        self.files.sort(key=lambda f: f["name"])
        self.stats.setdefault("rows", sum(f["rows"] or 0 for f in self.files))
        self.stats.setdefault("bytes", sum(f["bytes"] for f in self.files))
        self.stats["seconds"] = round(time.time() - self.started, 3)
        storage.write_json_atomic(storage.join(self.final, STATS), {"stage": self.stage, **self.stats})
        manifest = {"stage": self.stage, "key": self.key, "config": to_dict(self.config),
                    "inputs": [to_dict(i) for i in self.inputs], "files": self.files,
                    "num_rows": sum(f["rows"] or 0 for f in self.files)}
        storage.write_json_atomic(storage.join(self.final, MANIFEST), manifest)
        return self.final

    def abort(self, quiet_s: float = ABORT_QUIET_S, max_s: float = 30.0) -> None:
        """Remove the temporary directory, and again whenever a late file lands in it, until it has
        stayed empty for ``quiet_s`` (at most ``max_s``). A failed stage's other tasks are cancelled,
        but one in the middle of an upload finishes it: on S3 such a file appeared after the first
        removal (``test_unreadable_s3_object_among_many_is_named``, once in a full suite run)."""
        storage.remove_tree(self.tmp)
        started = quiet = time.time()
        while time.time() - quiet < quiet_s and time.time() - started < max_s:
            time.sleep(0.1)
            if storage.list_files(self.tmp):
                storage.remove_tree(self.tmp)
                quiet = time.time()
        storage.remove_tree(self.tmp)  # a directory a late writer made, with its file already removed


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
        with stage_exec.stage_data_context():
            produce(writer)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def iter_arrow(ds, batch_size: int | None = 4096) -> Iterator[pa.Table]:
    """Batches of a Ray Dataset as pyarrow tables (build ``ds`` under ``preserve_order``)."""
    yield from ds.iter_batches(batch_size=batch_size, batch_format="pyarrow")


def shard_units(uri: str) -> list[stage_exec.Unit]:
    """A completed output's shards as work units, one per file, in row order."""
    return [stage_exec.Unit(f) for f in data_files(uri)]
