"""DOCUMENTS -> DOCUMENTS without near-duplicates: MinHash LSH, then connected components.

Between ``clean`` (exact duplicates) and ``split``; the output has ``clean``'s schema and files
(``part-{shard:05d}-0000.parquet``, one per input shard, rows in input order), so ``split`` reads it
unchanged. Steps, each a pure function on pyarrow tables or numpy arrays, run by Ray Data:

1. Signatures (``SignShard``, a task per input shard, ``stage_exec.map_units``): the document's word
   ``ngram``-grams (words: ``str.split``'s, after ``clean``'s normalisation; no case folding),
   each hashed to 64 bits with a seeded hash over its UTF-8 bytes; ``num_perm`` MinHash values
   ``min(a_j * h + b_j mod 2^32)``; ``bands`` bucket keys, each a hash of the band's ``rows`` values
   and the band's index. All vectorised in numpy (``signatures``). A document of fewer than
   ``ngram`` words (but at least one) has one shingle, its whole word sequence, so it only meets a
   document with the same words (exact-only); an empty document has none and is never a candidate.
   Both are counted (``short_documents``, ``empty_documents``). Each document is a node
   ``shard << 32 | row``.
2. Candidates: the (bucket, node) rows through Ray Data's hash shuffle on the bucket (``bucket_edges``).
   A bucket of k <= ``all_pairs_up_to`` documents gives all its pairs; a larger one gives k - 1
   edges, a star around its smallest node, never k^2 pairs. (A star alone loses pairs to the check:
   when the centre fails against two members that pass against each other, that pair is never
   compared.)
3. Check (``check_jaccard``): each distinct candidate edge gets both ends' signatures (two hash
   shuffles on the end's shard, each block reading the signature files of its shards) and is kept
   when the share of equal MinHash values is at least ``threshold``.
4. Components: large-star / small-star (Kiveris et al., 2014) over the kept edges, each step a hash
   shuffle on a node and a block-wise numpy function, until the edges form stars around each
   component's smallest node (``iterations`` in the stats). Memory per process: a block's edges.
5. Survivors: the smallest node of each component is kept, the others removed. Nodes follow the
   input's order (shard, then row), which for ``clean``'s output is the order of ``doc_id``:
   the survivor is the smallest ``doc_id`` (checked, ``doc_ids_in_order`` in the stats). Each
   shard's removed documents are written with their survivor's ``doc_id`` to
   ``removed/part-{shard:05d}.parquet`` beside the output (not in the manifest's data files).

The LSH S-curve: a pair of Jaccard similarity s shares at least one bucket with probability
``1 - (1 - s^rows)^bands``, 0.5 near s = ``(1/bands)^(1/rows)``. The defaults, 16 x 7 (112 values)
with the check at 0.75, are chosen for near-duplicates at s >= 0.8:

    s              0.5    0.6    0.65   0.7    0.75   0.8    0.85   0.9
    16 x 7         0.12   0.37   0.55   0.75   0.90   0.977  0.998  1.000
    14 x 8         0.05   0.21   0.37   0.56   0.77   0.92   0.99   1.000   (datatrove's)

16 x 7 finds 97.7% of the pairs at 0.8 where 14 x 8 finds 92%; the pairs it adds at 0.6-0.7 are
dropped by the check (the estimate's s.d. at 0.7 is 0.043 with 112 values). ``bench.near_dedup
--only quality`` measures both on injected near-duplicates (module docstring there).
Output bytes depend only on the input, the config and the seed: edge and component steps are
functions of sets, and each output file is one input shard filtered.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import parquet_files, schemas, stage_exec, stage_store, storage
from pipelines.typed_config import ConfigError

STAGE = "near_dedup"
ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1
_U = np.uint64


@dataclasses.dataclass(frozen=True)
class NearDedupConfig:
    enabled: bool = True
    """False: the stage passes ``clean``'s output on unchanged."""
    ngram: int = 5
    """Words per shingle."""
    num_perm: int = 112
    """MinHash values per document; must equal ``bands * rows``."""
    bands: int = 16
    """LSH bands: each is one bucket key per document (datatrove's default is 14 x 8; see the S-curve
    in the module docstring for why 16 x 7)."""
    rows: int = 7
    """MinHash values per band."""
    threshold: float = 0.75
    """A candidate pair is kept when its estimated Jaccard similarity is at least this (in (0, 1))."""
    check_jaccard: bool = True
    """False: every pair that shares a bucket is a duplicate (no estimate is checked)."""
    all_pairs_up_to: int = 16
    """A bucket of at most this many documents sends all its pairs to the check; a larger one (the
    same boilerplate in many documents) a star around its smallest document: k - 1 edges."""
    seed: int = 0
    """Seeds the shingle hash and the MinHash permutations."""
    minhash_engine: Literal["numpy", "rensa"] = "numpy"
    """Who computes the MinHash values from the shingle hashes: this module's numpy core, or the
    ``rensa`` package's ``RMinHash`` (Rust; not a dependency of the package: ``pip install rensa``).
    The two give different values (each deterministic), so this is part of the output's identity.
    ``python -m bench.near_dedup``: the signatures of the demo corpus take 0.27 CPU s with numpy and
    0.16 with rensa (whose digests reach numpy only as Python lists)."""
    num_partitions: int = 16
    """Hash partitions of every shuffle (bucket keys, edges): a fixed count, as ``clean.num_buckets``."""
    max_iterations: int = 64
    """Large-star / small-star rounds before the stage gives up (O(log^2 n) are needed)."""

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ConfigError(f"near_dedup.ngram: must be >= 1, got {self.ngram}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"near_dedup.threshold: must be in (0, 1), got {self.threshold}")
        if min(self.bands, self.rows) < 1 or self.bands * self.rows != self.num_perm:
            raise ConfigError(f"near_dedup.num_perm: must equal bands x rows ({self.bands} x {self.rows} = "
                              f"{self.bands * self.rows}), got {self.num_perm}")
        for name in ("num_partitions", "max_iterations", "all_pairs_up_to"):
            if getattr(self, name) < 1:
                raise ConfigError(f"near_dedup.{name}: must be >= 1, got {getattr(self, name)}")


def s_curve(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that a pair of Jaccard similarity ``s`` shares at least one bucket."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


# --- signatures -----------------------------------------------------------------------------------
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = x + _U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def _seed_words(seed: int, n: int, salt: int) -> np.ndarray:
    return _mix(np.arange(n, dtype=_U) + _U((seed * 0x51ED27 + salt * 0x2545F491) & ((1 << 64) - 1)))


def word_hashes(texts: pa.Array | pa.ChunkedArray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word of ``texts`` (split on Unicode whitespace, as ``str.split``), in
    order; -> (hashes, words per document). Each distinct word is hashed once (Arrow's dictionary
    encoding), by ``_hash_strings``."""
    lists = pc.utf8_split_whitespace(texts)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks else pa.array([], pa.list_(pa.string()))
    words = lists.flatten()  # Arrow keeps the empty strings around leading, trailing and repeated spaces
    nonempty = pc.greater(pc.binary_length(words), 0)
    parents = pc.list_parent_indices(lists).filter(nonempty).to_numpy(zero_copy_only=False)
    per_doc = np.bincount(parents, minlength=len(lists)).astype(np.int64)
    encoded = pc.dictionary_encode(words.filter(nonempty))
    hashes = _hash_strings(encoded.dictionary, seed)
    return hashes[encoded.indices.to_numpy(zero_copy_only=False)], per_doc


def _hash_strings(strings: pa.Array, seed: int) -> np.ndarray:
    """A 64-bit hash of each (non-empty) string: a polynomial over its UTF-8 bytes (powers of a seeded
    odd base, mod 2^64) plus its length, through splitmix64; vectorised over all the bytes."""
    strings = pc.cast(strings, pa.large_string())
    n = len(strings)
    if n == 0:
        return np.zeros(0, _U)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset:strings.offset + n + 1]
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(data)) - offsets[:-1][owner]
    base = _seed_words(seed, 1, 1)[0] | _U(1)
    powers = np.cumprod(np.full(int(lengths.max()), base, dtype=_U))
    terms = (data.astype(_U) + _U(1)) * powers[pos]
    sums = np.add.reduceat(terms, offsets[:-1])
    return _mix(sums + lengths.astype(_U) * _U(0x9E3779B97F4A7C15) + _seed_words(seed, 1, 2)[0])


def shingle_hashes(words: np.ndarray, words_per_doc: np.ndarray, ngram: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word ``ngram``-gram inside each document; a document of 1 to ngram - 1 words
    has one shingle of all its words, an empty one none. -> (hashes, document of each)."""
    doc_start = np.concatenate([[0], np.cumsum(words_per_doc)[:-1]]).astype(np.int64)
    doc_of_word = np.repeat(np.arange(len(words_per_doc)), words_per_doc)
    padded = np.concatenate([words, np.zeros(ngram, _U)])
    acc = np.zeros(len(words), _U)
    short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < ngram))
    short_hash = np.zeros(len(short), _U)
    for k in range(ngram):
        acc = acc * _U(0x100000001B3) + padded[k:k + len(words)]
        hit = words_per_doc[short] == k + 1
        short_hash[hit] = acc[doc_start[short[hit]]]
    end = doc_start[doc_of_word] + words_per_doc[doc_of_word] if len(words) else np.zeros(0, np.int64)
    full = np.arange(len(words)) + ngram <= end
    salt = _seed_words(seed, 1, 3)[0]
    hashes = np.concatenate([_mix(acc[full] ^ salt), _mix(short_hash ^ salt)])
    docs = np.concatenate([doc_of_word[full], short])
    order = np.argsort(docs, kind="stable")
    return hashes[order], docs[order]


def permutations(cfg: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` (a odd, b) pairs of ``a * h + b mod 2^32``, from the seed."""
    a, b = _seed_words(cfg.seed, cfg.num_perm, 4), _seed_words(cfg.seed, cfg.num_perm, 5)
    return (a >> _U(32)).astype(np.uint32) | np.uint32(1), (b >> _U(32)).astype(np.uint32)


def minhash(hashes: np.ndarray, docs: np.ndarray, num_docs: int, a: np.ndarray, b: np.ndarray,
            chunk: int = 2048) -> np.ndarray:
    """(num_docs, num_perm) uint32 minima of ``a * h + b mod 2^32`` (h: a shingle hash's high 32 bits)
    over each document's shingles; a document without shingles keeps 2^32 - 1 everywhere. ``docs``
    is sorted. 32-bit lanes: twice the values per memory pass of 64-bit ones (0.165 s against 0.35 s
    on the demo corpus), and a 32-bit minimum is what the Jaccard check keeps anyway."""
    sig = np.full((num_docs, len(a)), np.iinfo(np.uint32).max, dtype=np.uint32)
    high = (hashes >> _U(32)).astype(np.uint32)
    for lo in range(0, len(high), chunk):
        h, d = high[lo:lo + chunk], docs[lo:lo + chunk]
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        values = h[:, None] * a[None, :]  # (chunk, num_perm), wrapping
        values += b[None, :]
        mins = np.minimum.reduceat(values, starts, axis=0)
        sig[d[starts]] = np.minimum(sig[d[starts]], mins)
    return sig


def rensa_minhash(hashes: np.ndarray, docs: np.ndarray, num_docs: int, num_perm: int, seed: int) -> np.ndarray:
    """``minhash``'s contract computed by rensa's ``RMinHash`` (uint32 values; 2^32 - 1 for no shingle)."""
    try:
        import rensa
    except ImportError as e:
        raise ConfigError("near_dedup.minhash_engine: 'rensa' needs the rensa package (pip install rensa)") from e
    offsets = np.searchsorted(docs, np.arange(num_docs + 1)).astype(np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, num_perm, seed)
    return np.array(matrix.to_rows(), dtype=np.uint32).reshape(num_docs, num_perm)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(num_docs, bands) int64 bucket keys: each band's ``rows`` values and its index, hashed."""
    keys = np.zeros((sig.shape[0], bands), _U)
    for j in range(bands):
        acc = _mix(_U(j) + _U(0x632BE59BD9B4E019) + np.zeros(sig.shape[0], _U))
        for i in range(rows):
            acc = _mix(acc ^ sig[:, j * rows + i].astype(_U))
        keys[:, j] = acc
    return keys.view(np.int64)


SIGNED = pa.schema([("node", pa.int64()), ("doc_id", pa.string()), ("num_words", pa.int64()),
                    ("signature", pa.binary()), ("buckets", pa.binary())])
"""A signature work file (one per input shard, row i = the shard's row i): the MinHash values
(``num_perm`` x uint32) and the bucket keys (``bands`` x int64), as raw bytes."""


def signatures(table: pa.Table, cfg: NearDedupConfig, shard: int = 0) -> tuple[pa.Table, dict[str, Any]]:
    """DOCUMENTS of one shard -> SIGNED rows (empty documents get no bucket keys) and counts."""
    schemas.check_schema(table, schemas.DOCUMENTS, STAGE)
    n = table.num_rows
    words, per_doc = word_hashes(table.column("text"), cfg.seed)
    hashes, docs = shingle_hashes(words, per_doc, cfg.ngram, cfg.seed)
    if cfg.minhash_engine == "rensa":
        sig = rensa_minhash(hashes, docs, n, cfg.num_perm, cfg.seed)
    else:
        sig = minhash(hashes, docs, n, *permutations(cfg))
    keys = band_keys(sig, cfg.bands, cfg.rows)
    empty = per_doc == 0
    doc_ids = table.column("doc_id")
    out = pa.table({
        "node": pa.array((np.int64(shard) << ROW_BITS) + np.arange(n, dtype=np.int64)),
        "doc_id": doc_ids, "num_words": pa.array(per_doc),
        "signature": _rows_as_binary(sig), "buckets": _rows_as_binary(keys, keep=~empty)}, schema=SIGNED)
    ids = doc_ids.to_pylist()
    stats = {"documents_in": n, "words": int(per_doc.sum()), "short_documents": int((per_doc < cfg.ngram).sum()),
             "empty_documents": int(empty.sum()),
             "ids_out_of_order": int(sum(a >= b for a, b in zip(ids, ids[1:])))}
    return out, stats


def _rows_as_binary(values: np.ndarray, keep: np.ndarray | None = None) -> pa.Array:
    """Each row of a 2-d array as one binary value (empty where ``keep`` is False)."""
    n, width = values.shape[0], values.shape[1] * values.itemsize
    flat = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    lengths = np.full(n, width, np.int32) if keep is None else np.where(keep, width, 0).astype(np.int32)
    data = flat.reshape(-1) if keep is None else flat[keep].reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _binary_rows(column: pa.Array | pa.ChunkedArray, dtype, width: int) -> np.ndarray:
    """The inverse of ``_rows_as_binary`` for rows that all hold ``width`` values."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, width), dtype)
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset:column.offset + len(column) + 1]
    data = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    return data.view(dtype).reshape(-1, width)


class SignShard:
    """The signature pass's worker: ``signatures`` of one input shard (its position is the unit)."""

    keep_unit = True

    def __init__(self, cfg: NearDedupConfig):
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        shard = int(table.column("_unit")[0].as_py())
        return signatures(table.drop_columns(["_unit"]), self.cfg, shard)


# --- candidates and the Jaccard check ---------------------------------------------------------------
EDGES = pa.schema([("lo", pa.int64()), ("hi", pa.int64())])
"""An undirected edge between nodes lo < hi. Rows with lo < 0 are a block's report (``_report``)."""
BUCKETS = pa.schema([("bucket", pa.int64()), ("node", pa.int64())])
DIRECTED = pa.schema([("u", pa.int64()), ("v", pa.int64())])


def _empty_gives(schema: pa.Schema):
    """A block function that returns an empty ``schema`` table for an empty block (Ray Data may hand
    one over without its columns)."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(block: pa.Table, *args):
            return schema.empty_table() if block.num_rows == 0 else fn(block, *args)
        return run
    return wrap


@_empty_gives(BUCKETS)
def bucket_rows(block: pa.Table) -> pa.Table:
    """SIGNED rows -> one (bucket, node) row per bucket key of each non-empty document."""
    keys = block.column("buckets")
    has = pc.binary_length(keys).to_numpy(zero_copy_only=False) > 0
    nodes = block.column("node").to_numpy()[has]
    width = 0 if not len(nodes) else int(pc.max(pc.binary_length(keys)).as_py()) // 8
    flat = _binary_rows(keys.filter(pa.array(has)), np.int64, width)
    return pa.table({"bucket": pa.array(flat.reshape(-1)), "node": pa.array(np.repeat(nodes, width))})


@_empty_gives(EDGES)
def bucket_edges(block: pa.Table, all_pairs_up_to: int) -> pa.Table:
    """On a block holding every row of its buckets: a bucket of k <= ``all_pairs_up_to`` nodes gives
    its k (k - 1) / 2 pairs, a larger one the k - 1 edges from its smallest node to each other one
    (a giant bucket costs k edges, not k^2)."""
    bucket, node = block.column("bucket").to_numpy(), block.column("node").to_numpy()
    order = np.lexsort((node, bucket))
    bucket, node = bucket[order], node[order]
    same = (bucket[1:] == bucket[:-1]) if len(bucket) else np.zeros(0, bool)
    distinct = np.r_[True, ~same | (node[1:] != node[:-1])] if len(bucket) else np.zeros(0, bool)
    bucket, node = bucket[distinct], node[distinct]
    first = np.r_[True, bucket[1:] != bucket[:-1]] if len(bucket) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(bucket)])
    small = np.repeat(sizes <= all_pairs_up_to, sizes)
    star = ~small & ~first
    lo, hi = [node[np.repeat(starts, sizes)][star]], [node[star]]
    widest = int(sizes[sizes <= all_pairs_up_to].max(initial=1))
    for gap in range(1, widest):  # row i and row i + gap of one small bucket (sorted: node[i] < node[i + gap])
        i = np.flatnonzero(small[:-gap] & (bucket[:-gap] == bucket[gap:]))
        lo.append(node[i])
        hi.append(node[i + gap])
    return _unique_edges(np.concatenate(lo), np.concatenate(hi))


def _unique_edges(lo: np.ndarray, hi: np.ndarray) -> pa.Table:
    order = np.lexsort((hi, lo))
    lo, hi = lo[order], hi[order]
    new = np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])] if len(lo) else np.zeros(0, bool)
    return pa.table({"lo": pa.array(lo[new], pa.int64()), "hi": pa.array(hi[new], pa.int64())})


def _shard_runs(shards: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(shard, row indices) for each shard present, ascending."""
    order = np.argsort(shards, kind="stable")
    values, starts = np.unique(shards[order], return_index=True)
    bounds = np.r_[starts, len(order)]
    return [(int(v), order[bounds[i]:bounds[i + 1]]) for i, v in enumerate(values)]


def attach_signatures(block: pa.Table, end: str, sig_files: list[str], num_perm: int, env: dict[str, str]
                      ) -> pa.Table:
    """Edges (plus ``sig_lo`` after the first hop) on a block holding every edge whose ``end`` lies in
    its shards -> the same distinct edges with ``sig_{end}``: each shard's signature file is read once."""
    storage.apply_env(env)
    lo, hi = block.column("lo").to_numpy(), block.column("hi").to_numpy()
    if end == "lo":
        edges = _unique_edges(lo, hi)
        lo, hi = edges.column("lo").to_numpy(), edges.column("hi").to_numpy()
        block = edges
    nodes = lo if end == "lo" else hi
    sig = np.zeros((len(nodes), num_perm), np.uint32)
    for shard, rows in _shard_runs(nodes >> ROW_BITS):
        signed = parquet_files.read_parquet(sig_files[shard], ["signature"]).column("signature")
        sig[rows] = _binary_rows(signed, np.uint32, num_perm)[nodes[rows] & ROW_MASK]
    return block.select(["lo", "hi"] + (["sig_lo"] if end == "hi" else [])).append_column(
        f"sig_{end}", _rows_as_binary(sig))


def check_edges(block: pa.Table, num_perm: int, threshold: float) -> pa.Table:
    """Edges with both signatures -> those whose estimated Jaccard (share of equal values) >= threshold."""
    a = _binary_rows(block.column("sig_lo"), np.uint32, num_perm)
    b = _binary_rows(block.column("sig_hi"), np.uint32, num_perm)
    keep = (a == b).mean(axis=1) >= threshold if len(a) else np.zeros(0, bool)
    return pa.table({"lo": block.column("lo").filter(pa.array(keep)), "hi": block.column("hi").filter(pa.array(keep))},
                    schema=EDGES)


# --- connected components: large-star / small-star -----------------------------------------------
REPORT_UNSETTLED, REPORT_COMPONENTS, REPORT_LARGEST = -1, -2, -3


def _report(unsettled: int, components: int, largest: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([REPORT_UNSETTLED, REPORT_COMPONENTS, REPORT_LARGEST], np.int64),
            np.array([unsettled, components, largest], np.int64))


@_empty_gives(DIRECTED)
def directed(block: pa.Table) -> pa.Table:
    """Edges -> (u, v) both ways, the report rows dropped (large-star's input)."""
    lo, hi = block.column("lo").to_numpy(), block.column("hi").to_numpy()
    keep = lo >= 0
    lo, hi = lo[keep], hi[keep]
    return pa.table({"u": pa.array(np.r_[lo, hi], pa.int64()), "v": pa.array(np.r_[hi, lo], pa.int64())})


@_empty_gives(DIRECTED)
def by_larger_end(block: pa.Table) -> pa.Table:
    """Edges -> (u = larger end, v = smaller end), the report rows dropped (small-star's input)."""
    lo, hi = block.column("lo").to_numpy(), block.column("hi").to_numpy()
    keep = lo >= 0
    return pa.table({"u": pa.array(hi[keep], pa.int64()), "v": pa.array(lo[keep], pa.int64())})


def _groups(block: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (u, v) sorted; -> u, v, each row's group start, first-row flags."""
    u, v = block.column("u").to_numpy(), block.column("v").to_numpy()
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])] if len(u) else np.zeros(0, bool)
    u, v = u[new], v[new]
    first = np.r_[True, u[1:] != u[:-1]] if len(u) else np.zeros(0, bool)
    head = np.maximum.accumulate(np.where(first, np.arange(len(u)), 0)) if len(u) else np.zeros(0, int)
    return u, v, head, first


@_empty_gives(EDGES)
def large_star(block: pa.Table) -> pa.Table:
    """On a block holding every neighbour of its nodes: each node u links its larger neighbours to
    m = min(u, neighbours). Also reports, as rows with lo < 0, the nodes that are neither a star's
    centre (all neighbours larger) nor a leaf (one neighbour, smaller): 0 everywhere = converged;
    and the centres and the largest star (centre + leaves)."""
    u, v, head, first = _groups(block)
    m = np.minimum(u, v[head])
    out = v > u
    sizes = np.diff(np.r_[np.flatnonzero(first), len(u)])
    gu, gmin = u[first], v[first]
    centre = gmin > gu
    leaf = (sizes == 1) & (gmin < gu)
    rep_lo, rep_hi = _report(int((~centre & ~leaf).sum()), int(centre.sum()), int(sizes[centre].max(initial=0)) + 1
                             if centre.any() else 0)
    edges = _unique_edges(m[out], v[out])
    return pa.table({"lo": pa.array(np.r_[edges.column("lo").to_numpy(), rep_lo], pa.int64()),
                     "hi": pa.array(np.r_[edges.column("hi").to_numpy(), rep_hi], pa.int64())})


@_empty_gives(EDGES)
def small_star(block: pa.Table) -> pa.Table:
    """On a block holding every smaller neighbour of its nodes: each node u links itself and its
    smaller neighbours to the smallest of them."""
    u, v, head, first = _groups(block)
    m = v[head]  # every v < u here, sorted: the group's first is its minimum
    lo = np.r_[m, m[first]]
    hi = np.r_[v, u[first]]
    keep = lo != hi
    return _unique_edges(lo[keep], hi[keep])


# --- survivors ---------------------------------------------------------------------------------------
REMOVED = pa.schema([pa.field("doc_id", pa.string(), nullable=False),
                     pa.field("survivor_id", pa.string(), nullable=False)])
"""The audit rows: a removed document and the kept document of its cluster."""
REMOVED_DIR = "removed"


def survivor_ids(block: pa.Table, sig_files: list[str], env: dict[str, str]) -> pa.Table:
    """(lo = survivor, hi = removed) on a block holding every survivor of its shards -> (node =
    removed, survivor_id, shard of the removed node)."""
    storage.apply_env(env)
    lo, hi = block.column("lo").to_numpy(), block.column("hi").to_numpy()
    ids = np.empty(len(lo), dtype=object)
    for shard, rows in _shard_runs(lo >> ROW_BITS):
        doc_ids = parquet_files.read_parquet(sig_files[shard], ["doc_id"]).column("doc_id")
        ids[rows] = np.asarray(doc_ids.take(pa.array(lo[rows] & ROW_MASK)).to_pylist(), dtype=object)
    return pa.table({"node": pa.array(hi, pa.int64()), "survivor_id": pa.array(ids.tolist(), pa.string()),
                     "shard": pa.array((hi >> ROW_BITS).astype(np.int32))}, schema=FINISH)


FINISH = pa.schema([("node", pa.int64()), ("survivor_id", pa.string()), ("shard", pa.int32())])


def remove_documents(table: pa.Table, rows: np.ndarray, survivors: list[str]) -> tuple[pa.Table, pa.Table]:
    """One shard's DOCUMENTS less ``rows`` (order kept) and the audit rows (doc_id, survivor_id), by row."""
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    drop = np.zeros(table.num_rows, bool)
    drop[rows] = True
    kept = table.filter(pa.array(~drop)).select(schemas.DOCUMENTS.names)
    audit = pa.table({"doc_id": table.column("doc_id").take(pa.array(rows)),
                      "survivor_id": pa.array([survivors[i] for i in order], pa.string())}, schema=REMOVED)
    return kept, audit


def finish_block(block: pa.Table, input_files: list[str], tmp: str, env: dict[str, str]) -> pa.Table:
    """On a block of the hash shuffle on ``shard`` (each shard has one null-node row, so each
    appears): each shard's input file less its removed rows -> ``part-{shard:05d}-0000.parquet``,
    its audit rows -> ``removed/part-{shard:05d}.parquet``; -> one ``WRITTEN`` row per shard."""
    storage.apply_env(env)
    out = stage_exec.written_rows()
    for shard, rows in _shard_runs(block.column("shard").to_numpy()):
        part = block.take(pa.array(rows))
        real = pc.is_valid(part.column("node"))
        nodes = part.column("node").filter(real).to_numpy() & ROW_MASK
        survivors = part.column("survivor_id").filter(real).to_pylist()
        table = parquet_files.read_parquet(input_files[shard])
        kept, audit = remove_documents(table, nodes, survivors)
        if audit.num_rows:
            with storage.atomic_output(storage.join(tmp, REMOVED_DIR, f"part-{shard:05d}.parquet")) as sink:
                parquet_files.write_parquet([audit], REMOVED, sink)
        stats = {"documents": kept.num_rows, "removed": audit.num_rows}
        stage_exec.write_output(out, tmp, f"part-{shard:05d}-0000.parquet", kept, schemas.DOCUMENTS, shard, 0, stats)
    return pa.table(out, schema=stage_exec.WRITTEN)


# --- the pure core: the whole stage on one table (tests, benchmarks, and the reference the Ray run equals) ---
def components(edges: pa.Table, max_iterations: int = 64) -> tuple[pa.Table, dict[str, int]]:
    """Large-star / small-star on one block of edges until they are stars around each component's
    smallest node; -> (lo = smallest node, hi = other node) and {iterations, clusters, largest_cluster}."""
    for iteration in range(1, max_iterations + 1):
        large = large_star(directed(edges))
        report = dict(zip(*[large.column(c).to_numpy()[large.column("lo").to_numpy() < 0] for c in ("lo", "hi")]))
        if report[REPORT_UNSETTLED] == 0:
            return edges.select(["lo", "hi"]), {"iterations": iteration, "clusters": int(report[REPORT_COMPONENTS]),
                                               "largest_cluster": int(report[REPORT_LARGEST])}
        edges = small_star(by_larger_end(large))
    raise RuntimeError(f"near_dedup: components did not converge in {max_iterations} iterations")


def core(table: pa.Table, cfg: NearDedupConfig) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """DOCUMENTS -> (kept DOCUMENTS in input order, removed (doc_id, survivor_id), stats), in one
    process: the same functions the Ray stage runs, with every block the whole table."""
    signed, stats = signatures(table, cfg)
    edges = bucket_edges(bucket_rows(signed), cfg.all_pairs_up_to)
    stats["candidate_pairs"] = edges.num_rows
    if cfg.check_jaccard:
        sig = _binary_rows(signed.column("signature"), np.uint32, cfg.num_perm)
        lo, hi = edges.column("lo").to_numpy(), edges.column("hi").to_numpy()
        edges = edges.append_column("sig_lo", _rows_as_binary(sig[lo])).append_column("sig_hi", _rows_as_binary(sig[hi]))
        edges = check_edges(edges, cfg.num_perm, cfg.threshold)
    stats["checked_pairs"] = edges.num_rows
    stars, found = components(edges, cfg.max_iterations) if edges.num_rows else (edges, {
        "iterations": 0, "clusters": 0, "largest_cluster": 0})
    stats.update(found)
    survivors = table.column("doc_id").take(stars.column("lo")).to_pylist()
    kept, removed = remove_documents(table, stars.column("hi").to_numpy(), survivors)
    stats.update(documents=kept.num_rows, removed=removed.num_rows)
    return kept, removed, stats


# --- the Ray Data stage ----------------------------------------------------------------------------
def _shuffle(ds, key: str, cfg: NearDedupConfig, fn, fn_args: tuple = ()):
    return stage_exec.shuffle_groups(ds, key, cfg.num_partitions, fn, fn_args).materialize()


def _with_shard(block: pa.Table, end: str) -> pa.Table:
    return block.append_column("shard", pa.array((block.column(end).to_numpy() >> ROW_BITS).astype(np.int32)))


def _reports(ds) -> dict[int, int]:
    """The summed report rows (lo < 0) of a materialised large-star output; ``largest`` is a maximum."""
    from ray.data.expressions import col

    rows = stage_exec.collect(ds.filter(expr=col("lo") < 0))
    totals = {REPORT_UNSETTLED: 0, REPORT_COMPONENTS: 0, REPORT_LARGEST: 0}
    for kind, value in zip(rows.column("lo").to_pylist() if rows.num_rows else [],
                           rows.column("hi").to_pylist() if rows.num_rows else []):
        totals[kind] = max(totals[kind], value) if kind == REPORT_LARGEST else totals[kind] + value
    return totals


def find_components(edges, cfg: NearDedupConfig) -> tuple[Any, dict[str, int]]:
    """Large-star / small-star through Ray Data hash shuffles (each step's blocks hold every edge of
    their nodes; no process holds the graph) until the edges are stars; -> (the stars, counts)."""
    from pipelines import console

    for iteration in range(1, cfg.max_iterations + 1):
        console.progress(STAGE, iteration, None, "component rounds")
        large = _shuffle(edges.map_batches(directed, batch_size=None, batch_format="pyarrow"), "u", cfg, large_star)
        report = _reports(large)
        if report[REPORT_UNSETTLED] == 0:
            return edges, {"iterations": iteration, "clusters": report[REPORT_COMPONENTS],
                           "largest_cluster": report[REPORT_LARGEST]}
        edges = _shuffle(large.map_batches(by_larger_end, batch_size=None, batch_format="pyarrow"), "u", cfg,
                         small_star)
    raise RuntimeError(f"near_dedup: components did not converge in {cfg.max_iterations} iterations "
                       "(near_dedup.max_iterations)")


def candidate_edges(sig_files: list[str], cfg: NearDedupConfig, env: dict[str, str]):
    """The checked candidate edges as a materialised Ray Dataset, and their counts before/after the check."""
    buckets = stage_exec.read_files(sig_files, columns=["node", "buckets"]).map_batches(
        bucket_rows, batch_size=None, batch_format="pyarrow")
    edges = _shuffle(buckets, "bucket", cfg, bucket_edges, (cfg.all_pairs_up_to,))
    if not cfg.check_jaccard:
        return edges, edges.count(), edges.count()
    keyed = edges.map_batches(_with_shard, fn_args=("lo",), batch_size=None, batch_format="pyarrow")
    edges = _shuffle(keyed, "shard", cfg, attach_signatures, ("lo", sig_files, cfg.num_perm, env))
    candidates = edges.count()  # distinct after the first hop
    keyed = edges.map_batches(_with_shard, fn_args=("hi",), batch_size=None, batch_format="pyarrow")
    checked = stage_exec.shuffle_groups(keyed, "shard", cfg.num_partitions, attach_signatures,
                                        ("hi", sig_files, cfg.num_perm, env))
    # the check in the same Ray Data execution as the second hop (each execution costs seconds to start)
    checked = checked.map_batches(check_edges, fn_args=(cfg.num_perm, cfg.threshold), batch_size=None,
                                  batch_format="pyarrow").materialize()
    return checked, candidates, checked.count()


def run_near_dedup(cfg: NearDedupConfig, documents_uri: str, root: str, *, concurrency: int | None = None) -> str:
    """Remove the near-duplicates of the DOCUMENTS at ``documents_uri`` into ``{root}/near_dedup/{key}/``
    (see the module docstring for the steps); disabled, returns ``documents_uri`` itself."""
    if not cfg.enabled:
        return documents_uri
    import ray.data
    from pipelines import console

    def produce(writer: stage_store.StageWriter) -> None:
        units = stage_store.shard_units(documents_uri)
        env = storage.capture_env()
        stats, sig_files = stage_exec.map_units(writer, units, worker=SignShard, worker_args=(cfg,),
                                                schema=SIGNED, desc=STAGE, prefix="sig", record=False,
                                                concurrency=concurrency)
        if len(sig_files) != len(units):
            raise RuntimeError(f"near_dedup: {len(units)} shards gave {len(sig_files)} signature files")
        edges, stats["candidate_pairs"], stats["checked_pairs"] = candidate_edges(sig_files, cfg, env)
        every = ray.data.from_arrow(pa.table({"node": pa.nulls(len(units), pa.int64()),
                                              "survivor_id": pa.nulls(len(units), pa.string()),
                                              "shard": pa.array(range(len(units)), pa.int32())}, schema=FINISH))
        removed = every
        stats.update(iterations=0, clusters=0, largest_cluster=0)
        if stats["checked_pairs"]:
            stars, found = find_components(edges, cfg)
            stats.update(found)
            # not materialised: the survivors' shuffle and the finishing one run as one Ray Data execution
            named = stage_exec.shuffle_groups(stars.map_batches(_with_shard, fn_args=("lo",), batch_size=None,
                                                                batch_format="pyarrow"),
                                              "shard", cfg.num_partitions, survivor_ids, (sig_files, env))
            removed = named.union(every)
        finished = stage_exec.shuffle_groups(removed, "shard", cfg.num_partitions, finish_block,
                                             ([u.uri for u in units], writer.tmp, env))
        totals = stage_exec.record_written(writer, stage_exec.collect(finished))
        for uri in sig_files:
            storage.remove_tree(uri)
        stats.update(totals, doc_ids_in_order=stats.pop("ids_out_of_order") == 0, removed_dir=REMOVED_DIR)
        writer.stats.update(stats)
        console.result(STAGE, f"{stats['removed']:,} of {stats['documents_in']:,} documents removed in "
                              f"{stats['clusters']:,} clusters (largest {stats['largest_cluster']:,}), "
                              f"{stats['iterations']} component rounds, {stats['short_documents']:,} short documents")

    inputs = (stage_store.input_identity(documents_uri),)
    return stage_store.run_stage(root, STAGE, cfg, inputs, produce, version=1)
