"""The phase's data order and each rank's input stream: a cursor that gives every rank, after any restart
or rescale, exactly the rows an uninterrupted run would have given it.

Order of an epoch, a pure function of (seed, epoch, the instances):
- the instances are cut into **chunks** of ``CHUNK_ROWS`` consecutive rows of one shard (footer row counts);
- the chunks are permuted with a generator seeded by (seed, epoch) and grouped into **windows** of
  ``BUFFER_ROWS`` rows; the rows of each window are permuted again, seeded by (seed, epoch, window).
  Block order plus a local buffer, not a full permutation of row ids: a full permutation needs random
  access to single rows, i.e. the whole phase in memory or one parquet read per row; windows are read
  as a few contiguous row ranges and still mix ``BUFFER_ROWS / CHUNK_ROWS`` distant parts of the corpus
  into every batch. (A corpus smaller than one window is fully permuted.)
- with length bins (``PhaseConfig.length_bins``, LDDL's idea), each window's whole micro-batches are then
  regrouped: its rows, in that order, are sorted into their bins, each bin cut into micro-batches, the rows
  left over (fewer than a micro-batch per bin) into mixed ones, and these micro-batches permuted, seeded
  by (seed, epoch, window). So nearly every micro-batch holds rows of one bin and is computed at that
  bin's bound (``engine.fit_to_bin``), while the window keeps its rows and every later rule holds.
- the epoch is its first ``steps_per_epoch * global_batch`` rows of that order (the rest, different rows
  each epoch, is dropped so every step is a full global batch).

Deal: position p of the epoch's order belongs to global micro-batch m = p // micro_batch, and m to rank
m % world. So step k of an epoch consumes positions [k * global_batch, (k + 1) * global_batch) whatever
the world size: the cursor (epoch, samples into the epoch), stored in every checkpoint, is a multiple of
the global batch. After a rescale N -> M workers the epoch, the cursor and so the set of rows of every
later step are kept; only which rank computes which micro-batch of a step changes (and each rank then
accumulates N/M times as many micro-batches).

Each rank reads its own rows through Ray Data, starting at the cursor: one item per (epoch, window) ->
``read_window`` (the window's chunks, permuted, the rank's positions in order) -> ``MaskInstances``
(``pretrain.dynamic_masking``, a callable class on CPU actors, seeded by (seed, epoch, instance_id)) ->
``iter_batches`` with prefetching, in order (``preserve_order``). Every rank decodes whole windows
(world-fold parquet reads, cheap next to a training step) so that no rank depends on another's stream.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import storage

CHUNK_ROWS = 1024
"""Rows read together from one shard (a contiguous range)."""
BUFFER_ROWS = 65536
"""Rows permuted together (the local shuffle buffer); 64 chunks."""
COLUMNS = ("input_ids", "token_type_ids", "is_random_next", "instance_id")
MASK_CPUS = 0.0
"""Logical CPUs reserved per reading/masking actor: none. Each rank's actor must start even when the
training workers (and other stages' pools) hold every logical CPU of the cluster: with 0.25 it stayed
pending forever in the demo DAG. The work still runs in its own process, beside the training step."""


class DataCursorError(ValueError):
    """A checkpoint's data position does not fit the instances on disk."""


@dataclass(frozen=True)
class InstancePlan:
    """The phase's shards as the order is built from them: URIs, footer row counts and a fingerprint."""

    files: tuple[str, ...]
    rows: tuple[int, ...]
    fingerprint: str
    """blake2b of each shard's name, row count and (instance_id, num_tokens, is_random_next) columns:
    rebuilt instances (another seed, length or corpus) keep instance_ids but not their lengths."""
    chunk_rows: int = CHUNK_ROWS
    buffer_rows: int = BUFFER_ROWS

    @classmethod
    def from_files(cls, files: list[str]) -> "InstancePlan":
        digest = hashlib.blake2b(digest_size=16)
        rows = []
        for uri in files:
            fs, path = storage.filesystem(uri)
            table = pq.read_table(path, filesystem=fs, columns=["instance_id", "num_tokens", "is_random_next"])
            rows.append(table.num_rows)
            digest.update(f"{uri.rsplit('/', 1)[-1]}:{table.num_rows}".encode())
            for column in table.columns:
                for chunk in column.chunks:
                    for buf in chunk.buffers():
                        if buf is not None:
                            digest.update(buf)
        return cls(tuple(files), tuple(rows), digest.hexdigest())

    @property
    def num_rows(self) -> int:
        return sum(self.rows)

    def summary(self) -> dict[str, Any]:
        """What a checkpoint stores to check that a resume reads the same instances in the same order."""
        return {"rows": self.num_rows, "files": len(self.files), "fingerprint": self.fingerprint,
                "chunk_rows": self.chunk_rows, "buffer_rows": self.buffer_rows}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InstancePlan":
        return cls(tuple(d["files"]), tuple(d["rows"]), d["fingerprint"], d["chunk_rows"], d["buffer_rows"])

    def chunks(self) -> list[tuple[int, int, int]]:
        """(file index, first row, end row) of every chunk, in shard order."""
        return [(f, a, min(a + self.chunk_rows, n)) for f, n in enumerate(self.rows)
                for a in range(0, n, self.chunk_rows)]


def check_cursor(saved: dict[str, Any] | None, plan: InstancePlan, where: str) -> None:
    """Raise DataCursorError naming what changed when a checkpoint's instances differ from ``plan``'s."""
    now = plan.summary()
    if saved is None:
        raise DataCursorError(f"{where} stores no instances fingerprint, so its data cursor cannot be checked "
                              f"against the instances ({now['rows']} rows); start the phase over")
    changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if changed:
        raise DataCursorError(
            f"{where}: the instances changed since the checkpoint was written (checkpoint, now): {changed}; "
            "its data cursor would not give the rows an uninterrupted run reads. Restore the instances it was "
            "trained on, or remove the run's checkpoints to start the phase over")


@dataclass(frozen=True)
class Window:
    chunks: tuple[int, ...]
    """Chunk indices, in the epoch's chunk order."""
    start: int
    """Epoch position of the window's first row."""
    size: int


def epoch_windows(plan: InstancePlan, seed: int, epoch: int) -> list[Window]:
    chunks = plan.chunks()
    order = np.random.default_rng([seed, epoch]).permutation(len(chunks))
    windows, current, size, start = [], [], 0, 0
    for c in order.tolist():
        current.append(c)
        size += chunks[c][2] - chunks[c][1]
        if size >= plan.buffer_rows:
            windows.append(Window(tuple(current), start, size))
            start, current, size = start + size, [], 0
    if current:
        windows.append(Window(tuple(current), start, size))
    return windows


def window_permutation(seed: int, epoch: int, index: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, index]).permutation(size)


def binned_order(order: np.ndarray, lengths: np.ndarray, window_start: int, micro: int, bins: tuple[int, ...],
                 seed: int, epoch: int, index: int) -> np.ndarray:
    """The window's row order (``order``: rows of the window's table, in epoch order) with its whole
    micro-batches regrouped by length bin (see the module's docstring). A micro-batch that straddles the
    window's edge keeps its rows; so does every position outside the window. ``lengths``: each row's
    tokens. Pure: a function of the order, the lengths and (seed, epoch, index)."""
    lo = (-window_start) % micro  # the window's first offset at a micro-batch boundary
    hi = max(lo, lo + (len(order) - lo) // micro * micro)
    region = order[lo:hi]
    if len(region) == 0:
        return order
    bin_of = np.minimum(np.searchsorted(np.asarray(bins), lengths[region], side="left"), len(bins) - 1)
    batches, rest = [], []
    for b in range(len(bins)):
        rows = region[bin_of == b]  # in the window's order
        whole = len(rows) // micro * micro
        batches += [rows[a:a + micro] for a in range(0, whole, micro)]
        rest.append(rows[whole:])
    rest = np.concatenate(rest)  # bin by bin: a mixed micro-batch holds neighbouring bins
    batches += [rest[a:a + micro] for a in range(0, len(rest), micro)]
    shuffle = np.random.default_rng([seed, epoch, index, len(bins)]).permutation(len(batches))
    return np.concatenate([order[:lo], *(batches[i] for i in shuffle), order[hi:]])


def rank_positions(window: Window, start: int, usable: int, micro: int, world: int, rank: int) -> np.ndarray:
    """Offsets inside the window of the epoch positions in [start, usable) that belong to ``rank``."""
    pos = np.arange(max(window.start, start), min(window.start + window.size, usable))
    return pos[(pos // micro) % world == rank] - window.start


@dataclass(frozen=True)
class Stream:
    """One rank's part of the order: what ``read_window`` needs (plain data, shipped to Ray Data tasks)."""

    plan: InstancePlan
    seed: int
    micro: int
    world: int
    rank: int
    usable: int
    """Rows of an epoch that are trained on: steps_per_epoch * global_batch."""
    keep_in_memory: bool = False
    """``materialize_instances``: the rank's reading process keeps every chunk it read, so later epochs
    do not read the shards again (one copy of the instances per rank)."""
    bins: tuple[int, ...] = ()
    """The phase's length bins (``PhaseConfig.bins``); (): the window's order as permuted."""


def steps_per_epoch(plan: InstancePlan, global_batch: int) -> int:
    return plan.num_rows // global_batch


def items(stream: Stream, epoch: int, samples_in_epoch: int, samples_needed: int) -> list[dict[str, int]]:
    """(epoch, window, start) for every window holding rows of this rank, from the cursor on, until the
    epochs cover ``samples_needed`` more global rows."""
    out = []
    start = samples_in_epoch
    while samples_needed > 0:
        for index, window in enumerate(epoch_windows(stream.plan, stream.seed, epoch)):
            if window.start + window.size > start and window.start < stream.usable:
                out.append({"epoch": epoch, "window": index, "start": start})
        samples_needed -= stream.usable - start
        epoch, start = epoch + 1, 0
    return out


def read_window(batch: pa.Table, stream: Stream) -> pa.Table:
    """Ray Data ``map_batches`` function (batch_size=1): one (epoch, window) item -> this rank's rows of the
    window, in epoch order, with an ``epoch`` column."""
    (epoch,), (index,), (start,) = (batch.column(k).to_pylist() for k in ("epoch", "window", "start"))
    plan = stream.plan
    window = epoch_windows(plan, stream.seed, epoch)[index]
    chunks = plan.chunks()
    parts = [_chunk(plan.files[f], a, b, stream.keep_in_memory) for f, a, b in (chunks[c] for c in window.chunks)]
    table = pa.concat_tables(parts).combine_chunks()
    order = window_permutation(stream.seed, epoch, index, window.size)
    if stream.bins:
        lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
        order = binned_order(order, lengths, window.start, stream.micro, stream.bins, stream.seed, epoch, index)
    keep = rank_positions(window, start, stream.usable, stream.micro, stream.world, stream.rank)
    rows = table.take(pa.array(order[keep]))
    return rows.append_column("epoch", pa.array(np.full(rows.num_rows, epoch, dtype=np.int64)))


_KEPT: dict[tuple[str, int, int], pa.Table] = {}  # chunks held by this process (keep_in_memory)


def _chunk(uri: str, first: int, end: int, keep: bool) -> pa.Table:
    if not keep:
        return _read_rows(uri, first, end)
    key = (uri, first, end)
    if key not in _KEPT:
        _KEPT[key] = _read_rows(uri, first, end)
    return _KEPT[key]


def _read_rows(uri: str, first: int, end: int) -> pa.Table:
    """Rows [first, end) of one shard, reading only the row groups that hold them."""
    fs, path = storage.filesystem(uri)
    f = pq.ParquetFile(path, filesystem=fs)
    groups, offset, skip = [], 0, 0
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if offset + n > first and offset < end:
            if not groups:
                skip = first - offset
            groups.append(g)
        offset += n
    table = f.read_row_groups(groups, columns=list(COLUMNS))
    return table.slice(skip, end - first)


def rank_batches(stream: Stream, masker_kwargs: dict[str, Any], epoch: int, samples_in_epoch: int,
                 samples_needed: int, prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """This rank's masked micro-batches from the cursor on, as numpy dicts (``TRAIN_BATCH_KEYS`` plus
    ``instance_id`` and ``epoch``)."""
    import ray.data

    from pipelines.pretrain.dynamic_masking import MaskInstances

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the rank's row order is the cursor's order
    # no person follows a rank's stream: its progress bars would only be redrawn into the run's log for as
    # long as the process lives (through fine-tuning too), and their last redraws reach the console after it
    ctx.enable_progress_bars = False
    work = items(stream, epoch, samples_in_epoch, samples_needed)
    ds = ray.data.from_items(work, override_num_blocks=max(1, len(work)))
    ds = ds.map_batches(read_window, batch_size=1, batch_format="pyarrow", fn_kwargs={"stream": stream},
                        num_cpus=MASK_CPUS)
    ds = ds.map_batches(MaskInstances, fn_constructor_kwargs=masker_kwargs, batch_size=None, batch_format="numpy",
                        num_cpus=MASK_CPUS, compute=ray.data.ActorPoolStrategy(size=1))
    yield from ds.iter_batches(batch_size=stream.micro, batch_format="numpy", prefetch_batches=prefetch)
