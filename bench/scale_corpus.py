"""A seeded English corpus of any size for ``bench.scale``: real documentation text resampled into
new documents, with a known number of exact duplicates and a few files far larger than the rest.

    python -m bench.scale_corpus --gb 0.2 --out /tmp/bert_scale_corpus/0.2gb-seed0
    python -m bench.scale_corpus --gb 2 --seed 1 --out DIR --duplicate-fraction 0.05

Format: BERT's, plain ``.txt``: one line per paragraph or sentence, a blank line between documents.

Source: the same Debian documentation text as ``bench.preprocess`` (``pipelines.demo.make_corpus``'s
sources; those installed here, ``python3.11-doc``'s rst sources and HTML pages, are used). Its
paragraphs, and the sentences of its multi-sentence paragraphs, form a pool of unique lines. Only
lines that ``pipelines.stages.clean`` leaves exactly as they are enter the pool. So a generated
document comes out of the clean stage unchanged, and the exact dedup finds exactly the copies
injected here. A document is a run of 1 to 400 pool lines (log-normal, median 9). The runs are
consecutive in the source, so neighbouring lines stay on one topic; a new run starts with
probability 1/4 at each line. Documents shorter than clean's ``min_chars`` are not written. No two
generated documents are equal (checked by digest).

Duplicates: in every chunk of generated documents, ``duplicate_fraction`` of them get an exact
copy (chosen with replacement, so a few get two or more). Every document, copies included, goes to a
random file, so copies land anywhere in the corpus. ``_corpus.json`` in the output directory (a
directory read skips names starting with ``_``) records the number of copies injected:
``duplicates_injected``. Clean's ``dropped.duplicate`` must equal it.

Sizes: ``large_shares`` of the bytes go to a few large files (by default one holds 15% of the
corpus and two hold 5% each), the rest is spread evenly over ``num_files`` files.

Speed: documents are built by sampling indices with numpy and joining pre-encoded lines, and written
in buffered chunks: 2 GB took 31.5 s (peak RSS 594 MB) at load average 20 on this 2-core box, after
~25 s to build the pool the first time (cached in the temporary directory).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import hashlib
import json
import os
import tempfile
import time

import numpy as np

DOCS_PER_CHUNK = 20_000
MAX_LINES_PER_DOC = 400
NEW_RUN_PROBABILITY = 0.25
VERSION = 2  # of the generator: a corpus on disk is reused only when made by the same version and spec
POOL_CACHE = os.path.join(tempfile.gettempdir(), f"bert_scale_pool-v{VERSION}.txt")


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    num_bytes: int
    """Target size; the corpus stops at the first document past it."""
    seed: int = 0
    num_files: int = 32
    """Ordinary files, sharing evenly what the large files leave."""
    large_shares: tuple[float, ...] = (0.15, 0.05, 0.05)
    """Share of the corpus in each large file."""
    duplicate_fraction: float = 0.02
    """Exact copies injected, per generated document."""
    min_chars: int | None = None
    """Shortest document written (default: clean's ``min_chars``, so no document is dropped as short)."""


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def source_files() -> dict[str, list[str]]:
    """bench.preprocess's sources that are installed here -> their files."""
    from bench.preprocess import SOURCES
    from pipelines.demo import make_corpus

    found = {}
    for name in SOURCES:
        base, pattern, _ = make_corpus.SOURCES[name]
        files = sorted(glob.glob(os.path.join(base, pattern), recursive=True))
        if files:
            found[name] = files
    if not found:
        packages = sorted({make_corpus.SOURCES[n][2] for n in SOURCES})
        raise SystemExit(f"no documentation source installed: apt-get install -y {' '.join(packages)}")
    return found


def clean_pool(lines: list[str]) -> list[str]:
    """The non-empty lines that clean leaves unchanged, each once, in order of first appearance (an
    empty one would end a document early)."""
    from pipelines.stages.clean import CleanConfig, clean_text

    cfg = CleanConfig(min_chars=0)
    return list(dict.fromkeys(line for line in lines if line and "\n" not in line and clean_text(line, cfg)[0] == line))


def build_pool() -> list[str]:
    """Paragraphs of the installed sources, then the sentences of their multi-sentence paragraphs
    (so a run of lines stays within one kind), filtered by ``clean_pool``."""
    from pipelines.demo import make_corpus
    from pipelines.stages.split import split_sentences

    paragraphs: list[str] = []
    for files in source_files().values():
        for path in files:
            parse = make_corpus.html_documents if path.endswith(".html") else make_corpus.documents_of
            for doc in parse(_read(path)):
                paragraphs.extend(doc)
    split = [split_sentences(p) for p in paragraphs]
    sentences = [s for parts in split if len(parts) > 1 for s in parts]
    return clean_pool(paragraphs + sentences)


def load_pool(cache: str = POOL_CACHE) -> list[str]:
    """``build_pool``, cached in ``cache`` (one line per entry)."""
    if os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            return f.read().split("\n")
    pool = build_pool()
    tmp = f"{cache}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(pool))
    os.replace(tmp, cache)
    return pool


def pool_digest(pool: list[str]) -> str:
    return hashlib.sha256("\n".join(pool).encode("utf-8")).hexdigest()[:16]


def file_shares(spec: CorpusSpec, rng: np.random.Generator) -> np.ndarray:
    """Share of the corpus per file; the large files sit at random places in the listing."""
    large = list(spec.large_shares)
    rest = (1.0 - sum(large)) / spec.num_files
    shares = np.array(large + [rest] * spec.num_files)
    return shares[rng.permutation(len(shares))]


def sample_documents(rng: np.random.Generator, num_docs: int, pool_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (pool index of every line, offset of every document's first line + the end)."""
    lines_per_doc = np.minimum(1 + rng.lognormal(np.log(8), 0.9, num_docs).astype(np.int64), MAX_LINES_PER_DOC)
    bounds = np.concatenate([[0], np.cumsum(lines_per_doc)])
    total = int(bounds[-1])
    new_run = rng.random(total) < NEW_RUN_PROBABILITY
    new_run[bounds[:-1]] = True
    run_first = np.flatnonzero(new_run)
    run_start = rng.integers(0, len(pool_chars), len(run_first))
    run_of_line = np.cumsum(new_run) - 1
    lines = (run_start[run_of_line] + np.arange(total) - run_first[run_of_line]) % len(pool_chars)
    return lines, bounds


def generate_chunk(rng: np.random.Generator, pool_nl: list[bytes], pool_chars: np.ndarray, min_chars: int,
                   seen: set[int], duplicate_fraction: float, budget: int) -> tuple[list[bytes], int]:
    """One chunk of documents (each ending with a blank line), copies included, in random order;
    its originals stop at the first past ``budget`` bytes; -> (documents, number of copies)."""
    lines, bounds = sample_documents(rng, DOCS_PER_CHUNK, pool_chars)
    # a document's text as read: its lines joined by "\n"
    chars = np.add.reduceat(pool_chars[lines], bounds[:-1]) + np.diff(bounds) - 1
    line_list = lines.tolist()
    docs = []
    for d in np.flatnonzero(chars >= min_chars).tolist():
        doc = b"".join([pool_nl[i] for i in line_list[bounds[d]:bounds[d + 1]]]) + b"\n"
        digest = int.from_bytes(hashlib.blake2b(doc, digest_size=8).digest(), "little")
        if digest not in seen:  # resampling may repeat a document: keep only the first
            seen.add(digest)
            docs.append(doc)
            budget -= len(doc)
            if budget <= 0:
                break
    num_copies = int(round(duplicate_fraction * len(docs)))
    docs += [docs[i] for i in rng.integers(0, len(docs), num_copies).tolist()]
    return [docs[i] for i in rng.permutation(len(docs)).tolist()], num_copies


class _Files:
    """Output files written in big buffered appends."""

    def __init__(self, out_dir: str, count: int, flush_bytes: int = 8 << 20):
        self.names = [f"part-{i:03d}.txt" for i in range(count)]
        self.handles = [open(os.path.join(out_dir, n), "wb") for n in self.names]
        self.buffers: list[list[bytes]] = [[] for _ in range(count)]
        self.pending = [0] * count
        self.bytes = [0] * count
        self.docs = [0] * count
        self.flush_bytes = flush_bytes

    def add(self, f: int, doc: bytes) -> None:
        self.buffers[f].append(doc)
        self.pending[f] += len(doc)
        self.docs[f] += 1
        if self.pending[f] >= self.flush_bytes:
            self.flush(f)

    def flush(self, f: int) -> None:
        self.handles[f].write(b"".join(self.buffers[f]))
        self.bytes[f] += self.pending[f]
        self.buffers[f], self.pending[f] = [], 0

    def close(self) -> None:
        for f, h in enumerate(self.handles):
            self.flush(f)
            h.close()


def write_corpus(pool: list[str], spec: CorpusSpec, out_dir: str) -> dict:
    """Write the corpus of ``spec`` from ``pool`` into ``out_dir`` (replacing its files) and its
    ``_corpus.json``; -> that record."""
    from pipelines.stages.clean import CleanConfig

    started = time.time()
    min_chars = CleanConfig().min_chars if spec.min_chars is None else spec.min_chars
    rng = np.random.default_rng(spec.seed)
    shares = file_shares(spec, rng)
    pool_nl = [line.encode("utf-8") + b"\n" for line in pool]
    pool_chars = np.array([len(line) for line in pool], dtype=np.int64)
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "part-*.txt")):
        os.remove(old)
    files = _Files(out_dir, len(shares))
    seen: set[int] = set()
    written = copies = documents = 0
    while written < spec.num_bytes:
        docs, num_copies = generate_chunk(rng, pool_nl, pool_chars, min_chars, seen, spec.duplicate_fraction,
                                           spec.num_bytes - written)
        targets = rng.choice(len(shares), size=len(docs), p=shares).tolist()
        for doc, f in zip(docs, targets):
            files.add(f, doc)
        written += sum(map(len, docs))
        copies += num_copies
        documents += len(docs)
    files.close()
    record = {"version": VERSION, "seed": spec.seed, "target_bytes": spec.num_bytes, "bytes": written, "documents": documents,
              "duplicates_injected": copies, "duplicate_fraction": spec.duplicate_fraction,
              "min_chars": min_chars, "pool": {"lines": len(pool), "sha256_16": pool_digest(pool)},
              "spec": dataclasses.asdict(spec), "seconds": round(time.time() - started, 1),
              "files": [{"name": n, "bytes": b, "documents": d} for n, b, d in zip(files.names, files.bytes, files.docs)]}
    with open(os.path.join(out_dir, "_corpus.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


def read_record(out_dir: str) -> dict | None:
    path = os.path.join(out_dir, "_corpus.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ensure_corpus(spec: CorpusSpec, out_dir: str) -> dict:
    """The record of the corpus in ``out_dir``, generated first unless one of the same spec is there."""
    record = read_record(out_dir)
    if record and record.get("version") == VERSION and record["spec"] == json.loads(json.dumps(dataclasses.asdict(spec))):
        return record
    return write_corpus(load_pool(), spec, out_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, required=True, help="size in 10^9 bytes")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-files", type=int, default=32)
    p.add_argument("--duplicate-fraction", type=float, default=0.02)
    args = p.parse_args(argv)
    spec = CorpusSpec(num_bytes=int(args.gb * 1e9), seed=args.seed, num_files=args.num_files,
                      duplicate_fraction=args.duplicate_fraction)
    record = ensure_corpus(spec, args.out)
    largest = max(record["files"], key=lambda f: f["bytes"])
    print(f"{record['bytes'] / 1e9:.3f} GB, {record['documents']:,} documents "
          f"({record['duplicates_injected']:,} exact copies) in {len(record['files'])} files under {args.out}; "
          f"largest {largest['name']} {largest['bytes'] / 1e6:.0f} MB; pool {record['pool']['lines']:,} lines; "
          f"{record['seconds']} s")


if __name__ == "__main__":
    main()
