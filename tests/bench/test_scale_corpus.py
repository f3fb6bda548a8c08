"""bench.scale_corpus: seeded, and its injected copies are exactly what clean's dedup finds."""
from __future__ import annotations

import collections
import io
import os

from bench import scale_corpus
from pipelines.stages import clean, read

WORDS = ("river", "garden", "method", "letter", "window", "engine", "forest", "number", "signal", "market")


def _pool() -> list[str]:
    lines = [f"The {WORDS[i % 10]} of page {i} shows how a {WORDS[i * 7 % 10]} works in practice." for i in range(300)]
    return scale_corpus.clean_pool(lines + ["", "  two  spaces  ", ".. note::", lines[0], "x = 1 + 2 * 3 / 4 - 5 % 6"])


def _files(out: str) -> dict[str, bytes]:
    names = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    return {n: open(os.path.join(out, n), "rb").read() for n in names}


def test_corpus_is_seeded_and_its_copies_are_the_duplicates_clean_finds(tmp_path):
    pool = _pool()
    assert len(pool) == 300  # empty, markup, odd spacing and the repeated line stay out
    spec = scale_corpus.CorpusSpec(num_bytes=400_000, seed=3, num_files=4, large_shares=(0.5,),
                                   duplicate_fraction=0.05)
    record = scale_corpus.write_corpus(pool, spec, str(tmp_path / "a"))
    scale_corpus.write_corpus(pool, spec, str(tmp_path / "b"))
    files = _files(str(tmp_path / "a"))
    assert files == _files(str(tmp_path / "b"))
    assert sum(map(len, files.values())) == record["bytes"] >= spec.num_bytes
    assert max(map(len, files.values())) > 0.4 * record["bytes"]

    texts = []
    for name, data in files.items():
        lines = read.iter_lines(io.BytesIO(data), 0, read.ReadConfig().max_line_bytes)  # as the read stage reads files
        for table in read.core(lines, name):
            texts += table.column("text").to_pylist()
    assert len(texts) == record["documents"]
    cleaned = [clean.clean_text(t, clean.CleanConfig()) for t in texts]
    assert [c[0] for c in cleaned] == texts and not any(c[1] for c in cleaned)  # clean keeps every document as is
    copies = sum(n - 1 for n in collections.Counter(texts).values())
    assert copies == record["duplicates_injected"] > 0
