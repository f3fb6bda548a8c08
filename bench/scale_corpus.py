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

Near-duplicates (off by default: ``--near-duplicates FRACTION``, ``CorpusSpec.near_duplicate_fraction``):
in every chunk, that share of the documents that occur once in it become originals, each given one
copy per edit band (``EDIT_BANDS``: 2, 5, 10, 20 and 40% of its words replaced, deleted or inserted,
a third each, ``edit_text``; line breaks kept where the edit leaves them), one with a header added
and one with a footer added (a line of site boilerplate, ``HEADERS``/``FOOTERS``). As many control
pairs are written: two unrelated newly sampled documents given the same long block of boilerplate (a
random sample of pool lines; its length set so the pair's true Jaccard is near a target drawn in
[0.2, 0.6], under any sensible threshold: they must never be merged). ``_near_duplicates.jsonl`` beside
the corpus holds the ground truth, one JSON object per copy (``kind``, ``copy``, ``original``,
``jaccard``) or per control pair (``kind: "control"``, ``a``, ``b``, ``jaccard``, ``boilerplate_words``).
Documents are named ``<file name>#<byte offset, 12 digits>``, the suffix of the read stage's
``doc_id``. ``jaccard`` is the true word-5-gram Jaccard (``jaccard``: sets of ``str.split`` 5-grams,
as ``near_dedup`` shingles) of the texts as read. Every injected document is distinct and comes out
of ``clean`` unchanged (an edit that clean would change is drawn again), and originals are documents
with no exact copy, so ``duplicates_injected`` still counts clean's duplicates exactly. Everything
injected is drawn from a second generator (seeded by ``seed``), so the spec's other documents are the
ones the same spec without near-duplicates writes (in the same files and order), with the injected
ones between them; their bytes come on top of ``num_bytes``. ``_corpus.json`` gets a
``near_duplicates`` summary (counts and mean true Jaccard per kind). A spec without near-duplicates is
recorded as before, so corpora generated before this option keep their meaning.

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
from typing import Iterator

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
    near_duplicate_fraction: float = 0.0
    """Originals given near-duplicate copies, per generated document; as many control pairs (0: none)."""


def spec_record(spec: CorpusSpec) -> dict:
    """The spec as ``_corpus.json`` records it: a field added after version 2 is left out at its
    default, so a corpus generated before it still matches its spec."""
    record = dataclasses.asdict(spec)
    if not spec.near_duplicate_fraction:
        del record["near_duplicate_fraction"]
    return json.loads(json.dumps(record))


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


# --- near-duplicates with known edits ----------------------------------------------------------------
EDIT_BANDS = (0.02, 0.05, 0.10, 0.20, 0.40)
NEAR_DUPLICATE_SALT = 0x4E454152  # the injection's generator: default_rng([seed, salt])
TRUTH_FILE = "_near_duplicates.jsonl"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
HEADERS = ("Posted on {day} {month} {year} by the editors of this site. Share this page with your friends and colleagues.",
           "Home / Articles / Reference. Last updated {day} {month} {year}. Reading time about {n} minutes.",
           "Welcome back. You are reading the archived version of this article from {month} {year}.")
FOOTERS = ("Thanks for reading. Subscribe to our newsletter for weekly updates on new articles and releases.",
           "Was this page helpful? Send us your feedback and we will answer within {n} days. Terms of use apply.",
           "Related articles: more guides from {month} {year}. Follow us for news, tips and announcements.")
BOILERPLATE_JACCARD = (0.2, 0.6)
"""A control pair's target true Jaccard is drawn uniformly in this range."""


def shingle_set(text: str, n: int = 5) -> set:
    """The word ``n``-grams of ``text`` (``str.split``'s words); a shorter text is one shingle."""
    w = text.split()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)} if len(w) >= n else {tuple(w)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """The true word-``n``-gram Jaccard similarity of two texts."""
    x, y = shingle_set(a, n), shingle_set(b, n)
    return len(x & y) / max(1, len(x | y))


def edited(words: list[str], fraction: float, rng: np.random.Generator, vocab: list[str]) -> list[str]:
    """``fraction`` of the words edited: a third replaced, a third deleted, a third inserted."""
    out = list(words)
    for _ in range(max(1, round(fraction * len(words)))):
        op, at = rng.integers(3), int(rng.integers(len(out)))
        if op == 0:
            out[at] = vocab[int(rng.integers(len(vocab)))]
        elif op == 1 and len(out) > 1:
            del out[at]
        else:
            out.insert(at, vocab[int(rng.integers(len(vocab)))])
    return out


def edit_text(text: str, fraction: float, rng: np.random.Generator, vocab: list[str]) -> str:
    """``edited`` on the words of ``text`` (lines of single-space-separated words, as clean leaves
    them); a line's last word carries its line break, so lines stay lines unless that word is
    replaced or deleted (the line then joins the next)."""
    tokens: list[str] = []
    for line in text.split("\n"):
        words = line.split(" ")
        words[-1] += "\n"
        tokens += words
    tokens[-1] = tokens[-1][:-1]
    out = edited(tokens, fraction, rng, vocab)
    return "".join(t if t.endswith("\n") else t + " " for t in out).rstrip(" \n")


def edit_vocabulary(pool: list[str], every: int = 50) -> list[str]:
    """Words inserted or substituted by edits: those of every ``every``-th pool line, sorted."""
    return sorted({w for line in pool[::every] for w in line.split()})


def _site_line(templates: tuple[str, ...], rng: np.random.Generator) -> str:
    t = templates[int(rng.integers(len(templates)))]
    return t.format(day=int(rng.integers(1, 29)), month=MONTHS[int(rng.integers(12))],
                    year=int(rng.integers(2005, 2026)), n=int(rng.integers(2, 15)))


class Injector:
    """Near-duplicate copies and control pairs, drawn from their own generator; each injected text is
    distinct, differs from every generated document and comes out of ``clean`` unchanged."""

    def __init__(self, pool: list[str], pool_nl: list[bytes], pool_chars: np.ndarray, seed: int, min_chars: int):
        from pipelines.stages.clean import CleanConfig

        self.rng = np.random.default_rng([seed, NEAR_DUPLICATE_SALT])
        self.pool, self.pool_nl, self.pool_chars = pool, pool_nl, pool_chars
        self.vocab = edit_vocabulary(pool)
        self.clean_cfg = CleanConfig(min_chars=min_chars)
        self.injected: set[int] = set()

    def _accept(self, text: str, seen: set[int]) -> bool:
        from pipelines.stages.clean import clean_text

        digest = _digest(text.encode("utf-8") + b"\n\n")
        if digest in seen or digest in self.injected or clean_text(text, self.clean_cfg)[:2] != (text, ""):
            return False
        self.injected.add(digest)
        return True

    def copies(self, text: str, seen: set[int], tries: int = 20) -> Iterator[tuple[str, str]]:
        """-> (kind, text) of each copy of ``text``: one per edit band, one with a header, one with a
        footer (a band whose draws all fail is left out)."""
        for fraction in EDIT_BANDS:
            for _ in range(tries):
                copy = edit_text(text, fraction, self.rng, self.vocab)
                if copy != text and self._accept(copy, seen):
                    yield f"edit{round(fraction * 100):02d}", copy
                    break
        for kind, templates in (("header", HEADERS), ("footer", FOOTERS)):
            for _ in range(tries):
                line = _site_line(templates, self.rng)
                copy = f"{line}\n{text}" if kind == "header" else f"{text}\n{line}"
                if self._accept(copy, seen):
                    yield kind, copy
                    break

    def _sampled_text(self) -> str:
        lines, bounds = sample_documents(self.rng, 1, self.pool_chars)
        return "\n".join(self.pool[i] for i in lines.tolist())

    def control_pair(self, seen: set[int], tries: int = 20) -> tuple[str, str, int] | None:
        """Two newly sampled documents with no shingle in common, given the same block of random pool
        lines (both at the top or both at the bottom), long enough for a target true Jaccard in
        ``BOILERPLATE_JACCARD`` (drawn again when the pair's true Jaccard exceeds its upper end);
        -> (text a, text b, words of the block), or None."""
        for _ in range(tries):
            a, b = self._sampled_text(), self._sampled_text()
            if not shingle_set(a).isdisjoint(shingle_set(b)):
                continue
            target = self.rng.uniform(*BOILERPLATE_JACCARD)
            want = target / (1 - target) * (len(a.split()) + len(b.split()))
            block: list[str] = []
            words = 0
            while words < want:
                line = self.pool[int(self.rng.integers(len(self.pool)))]
                block.append(line)
                words += len(line.split())
            boiler = "\n".join(block)
            top = bool(self.rng.integers(2))
            a, b = ((f"{boiler}\n{a}", f"{boiler}\n{b}") if top else (f"{a}\n{boiler}", f"{b}\n{boiler}"))
            if jaccard(a, b) <= BOILERPLATE_JACCARD[1] and self._accept(a, seen) and self._accept(b, seen):
                return a, b, words
        return None


def _digest(doc: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(doc, digest_size=8).digest(), "little")


def inject_chunk(injector: Injector, docs: list[bytes], num_originals: int, fraction: float, seen: set[int]
                 ) -> tuple[list[bytes], list[dict]]:
    """Near-duplicates for one chunk: ``fraction`` of its ``num_originals`` generated documents (only
    those with no exact copy in it) get copies, and as many control pairs are made; -> (injected
    documents, their truth records, with ``copy``/``original``/``a``/``b`` as ("doc", index in
    ``docs``) or ("extra", index in the injected documents) until the caller places them)."""
    count = int(round(fraction * num_originals))
    if not count:
        return [], []
    occurs: dict[bytes, int] = {}
    for doc in docs:
        occurs[doc] = occurs.get(doc, 0) + 1
    single = [i for i, doc in enumerate(docs) if occurs[doc] == 1]
    extra: list[bytes] = []
    truth: list[dict] = []
    chosen = sorted(injector.rng.choice(len(single), min(count, len(single)), replace=False).tolist())
    for i in (single[c] for c in chosen):
        text = docs[i][:-2].decode("utf-8")
        for kind, copy in injector.copies(text, seen):
            truth.append({"kind": kind, "copy": ("extra", len(extra)), "original": ("doc", i),
                          "jaccard": round(jaccard(text, copy), 6)})
            extra.append(copy.encode("utf-8") + b"\n\n")
    for _ in range(count):
        pair = injector.control_pair(seen)
        if pair is None:
            continue
        a, b, words = pair
        truth.append({"kind": "control", "a": ("extra", len(extra)), "b": ("extra", len(extra) + 1),
                      "jaccard": round(jaccard(a, b), 6), "boilerplate_words": words})
        extra += [a.encode("utf-8") + b"\n\n", b.encode("utf-8") + b"\n\n"]
    return extra, truth


def summarise_truth(truth: list[dict]) -> dict:
    """Per kind: how many, and their true Jaccard (mean, min, max)."""
    kinds: dict[str, list[float]] = {}
    for t in truth:
        kinds.setdefault(t["kind"], []).append(t["jaccard"])
    return {k: {"count": len(v), "mean_jaccard": round(float(np.mean(v)), 4), "min_jaccard": round(min(v), 4),
                "max_jaccard": round(max(v), 4)} for k, v in sorted(kinds.items())}


def read_truth(out_dir: str) -> list[dict]:
    """The ground truth of a corpus generated with near-duplicates (``TRUTH_FILE``), else []."""
    path = os.path.join(out_dir, TRUTH_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


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

    def add(self, f: int, doc: bytes) -> str:
        """-> the document's name: ``<file name>#<byte offset, 12 digits>`` (the read stage's ``doc_id``
        ends so)."""
        name = f"{self.names[f]}#{self.bytes[f] + self.pending[f]:012d}"
        self.buffers[f].append(doc)
        self.pending[f] += len(doc)
        self.docs[f] += 1
        if self.pending[f] >= self.flush_bytes:
            self.flush(f)
        return name

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
    truth_path = os.path.join(out_dir, TRUTH_FILE)
    if os.path.exists(truth_path):
        os.remove(truth_path)
    files = _Files(out_dir, len(shares))
    seen: set[int] = set()
    written = copies = documents = injected_bytes = 0
    injector = Injector(pool, pool_nl, pool_chars, spec.seed, min_chars) if spec.near_duplicate_fraction else None
    truth: list[dict] = []
    while written < spec.num_bytes:
        docs, num_copies = generate_chunk(rng, pool_nl, pool_chars, min_chars, seen, spec.duplicate_fraction,
                                           spec.num_bytes - written)
        targets = rng.choice(len(shares), size=len(docs), p=shares).tolist()
        written += sum(map(len, docs))
        copies += num_copies
        documents += len(docs)
        if injector is None:
            for doc, f in zip(docs, targets):
                files.add(f, doc)
            continue
        extra, chunk_truth = inject_chunk(injector, docs, len(docs) - num_copies, spec.near_duplicate_fraction, seen)
        # each injected document goes to a random file (the same shares), before a random one of the chunk's
        extra_files = injector.rng.choice(len(shares), size=len(extra), p=shares).tolist()
        slots = injector.rng.integers(0, len(docs) + 1, len(extra)).tolist()
        before: dict[int, list[int]] = {}
        for e in sorted(range(len(extra)), key=lambda e: (slots[e], e)):
            before.setdefault(slots[e], []).append(e)
        names: dict[tuple[str, int], str] = {}
        for j in range(len(docs) + 1):
            for e in before.get(j, ()):
                names["extra", e] = files.add(extra_files[e], extra[e])
            if j < len(docs):
                names["doc", j] = files.add(targets[j], docs[j])
        for t in chunk_truth:
            truth.append({k: names[v] if isinstance(v, tuple) else v for k, v in t.items()})
        injected_bytes += sum(map(len, extra))
        documents += len(extra)
    files.close()
    record = {"version": VERSION, "seed": spec.seed, "target_bytes": spec.num_bytes, "bytes": written + injected_bytes,
              "documents": documents,
              "duplicates_injected": copies, "duplicate_fraction": spec.duplicate_fraction,
              "min_chars": min_chars, "pool": {"lines": len(pool), "sha256_16": pool_digest(pool)},
              "spec": spec_record(spec), "seconds": round(time.time() - started, 1),
              "files": [{"name": n, "bytes": b, "documents": d} for n, b, d in zip(files.names, files.bytes, files.docs)]}
    if injector is not None:
        with open(truth_path, "w") as f:
            f.writelines(json.dumps(t) + "\n" for t in truth)
        record["near_duplicates"] = {
            "truth": TRUTH_FILE, "bytes": injected_bytes,
            "originals": len({t["original"] for t in truth if t["kind"] != "control"}),
            "copies": sum(t["kind"] != "control" for t in truth),
            "control_pairs": sum(t["kind"] == "control" for t in truth), "kinds": summarise_truth(truth)}
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
    if record and record.get("version") == VERSION and record["spec"] == spec_record(spec):
        return record
    return write_corpus(load_pool(), spec, out_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, required=True, help="size in 10^9 bytes")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-files", type=int, default=32)
    p.add_argument("--duplicate-fraction", type=float, default=0.02)
    p.add_argument("--near-duplicates", type=float, default=0.0, metavar="FRACTION",
                   help="originals given near-duplicate copies, per generated document, and as many control "
                        "pairs (default 0: none)")
    args = p.parse_args(argv)
    spec = CorpusSpec(num_bytes=int(args.gb * 1e9), seed=args.seed, num_files=args.num_files,
                      duplicate_fraction=args.duplicate_fraction, near_duplicate_fraction=args.near_duplicates)
    record = ensure_corpus(spec, args.out)
    largest = max(record["files"], key=lambda f: f["bytes"])
    near = record.get("near_duplicates")
    print(f"{record['bytes'] / 1e9:.3f} GB, {record['documents']:,} documents "
          f"({record['duplicates_injected']:,} exact copies"
          + (f", {near['copies']:,} near-duplicate copies of {near['originals']:,} originals, "
             f"{near['control_pairs']:,} control pairs" if near else "")
          + f") in {len(record['files'])} files under {args.out}; "
          f"largest {largest['name']} {largest['bytes'] / 1e6:.0f} MB; pool {record['pool']['lines']:,} lines; "
          f"{record['seconds']} s")


if __name__ == "__main__":
    main()
