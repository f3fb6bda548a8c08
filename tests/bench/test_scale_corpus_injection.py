"""bench.scale_corpus's near-duplicates: seeded, placed where the truth file says, its Jaccard exact,
and off by default (a spec without them writes and records what it did before)."""
from __future__ import annotations

import collections
import io
import json
import os

import numpy as np

from bench import scale_corpus
from pipelines.stages import clean, read

SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "gu", "so", "fe", "ni", "bo", "ze")


def _pool(lines: int = 600) -> list[str]:
    """Lines of seeded pseudo-words (letters only, so clean keeps them), few shingles in common."""
    rng = np.random.default_rng(7)
    vocab = sorted({"".join(SYLLABLES[i] for i in rng.integers(len(SYLLABLES), size=rng.integers(2, 5)))
                    for _ in range(3000)})
    out = []
    for _ in range(lines):
        words = [vocab[i] for i in rng.integers(len(vocab), size=rng.integers(6, 16))]
        out.append(" ".join([words[0].capitalize(), *words[1:]]) + ".")
    return scale_corpus.clean_pool(out)


def _spec(**kw) -> scale_corpus.CorpusSpec:
    return scale_corpus.CorpusSpec(num_bytes=300_000, seed=5, num_files=3, large_shares=(0.4,),
                                   duplicate_fraction=0.05, **kw)


def _files(out: str) -> dict[str, bytes]:
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if not n.startswith("_")}


def _documents(out: str) -> dict[str, str]:
    """doc_id -> text, as the read stage reads the corpus (doc_id: <file name>#<offset>)."""
    docs: dict[str, str] = {}
    for name, data in _files(out).items():
        for table in read.core(read.iter_lines(io.BytesIO(data), 0, read.ReadConfig().max_line_bytes), name):
            docs.update(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))
    return docs


def _jaccard_5(a: str, b: str) -> float:
    """Written out again here: word 5-grams of str.split()."""
    def grams(t: str) -> set:
        w = t.split()
        return {" ".join(w[i:i + 5]) for i in range(len(w) - 4)}
    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def test_injection_is_seeded_exact_and_off_by_default(tmp_path):
    pool = _pool()
    spec = _spec(near_duplicate_fraction=0.05)
    record = scale_corpus.write_corpus(pool, spec, str(tmp_path / "a"))
    scale_corpus.write_corpus(pool, spec, str(tmp_path / "b"))
    assert _files(str(tmp_path / "a")) == _files(str(tmp_path / "b"))
    truth = scale_corpus.read_truth(str(tmp_path / "a"))
    assert truth == scale_corpus.read_truth(str(tmp_path / "b"))

    near = record["near_duplicates"]
    kinds = collections.Counter(t["kind"] for t in truth)
    assert near["originals"] >= 10 and near["control_pairs"] == kinds["control"] >= 8
    for kind in ("edit02", "edit05", "edit10", "edit20", "edit40", "header", "footer"):
        assert kinds[kind] == near["originals"]  # every original gets one copy of each kind
    assert near["kinds"] == scale_corpus.summarise_truth(truth)

    docs = _documents(str(tmp_path / "a"))
    assert len(docs) == record["documents"]
    assert sum(map(len, _files(str(tmp_path / "a")).values())) == record["bytes"]
    # every injected document is where the truth says, its recorded Jaccard is the true one
    for t in truth:
        ends = (t["a"], t["b"]) if t["kind"] == "control" else (t["original"], t["copy"])
        assert abs(t["jaccard"] - _jaccard_5(docs[ends[0]], docs[ends[1]])) < 1e-6
        if t["kind"] == "header":
            assert docs[t["copy"]].endswith("\n" + docs[t["original"]])
        elif t["kind"] == "footer":
            assert docs[t["copy"]].startswith(docs[t["original"]] + "\n")
        elif t["kind"] == "control":
            assert t["jaccard"] <= scale_corpus.BOILERPLATE_JACCARD[1] and t["boilerplate_words"] > 0
    means = [near["kinds"][f"edit{p:02d}"]["mean_jaccard"] for p in (2, 5, 10, 20, 40)]
    assert means == sorted(means, reverse=True) and means[0] > 0.7 and means[-1] < 0.3
    # clean keeps every document as it is, and its exact duplicates are still just the injected copies
    cleaned = [clean.clean_text(t, clean.CleanConfig()) for t in docs.values()]
    assert [c[0] for c in cleaned] == list(docs.values()) and not any(c[1] for c in cleaned)
    assert sum(n - 1 for n in collections.Counter(docs.values()).values()) == record["duplicates_injected"]

    # off: the corpus without the injected documents, file by file, and recorded as before the option
    base = scale_corpus.write_corpus(pool, _spec(), str(tmp_path / "off"))
    assert "near_duplicates" not in base and "near_duplicate_fraction" not in base["spec"]
    assert not os.path.exists(tmp_path / "off" / scale_corpus.TRUTH_FILE)
    injected = {t[k] for t in truth for k in ("copy", "a", "b") if k in t}
    by_file: dict[str, list[str]] = collections.defaultdict(list)
    for doc_id, text in docs.items():  # in file order: doc_ids sort by offset within a file
        if doc_id not in injected:
            by_file[doc_id.split("#")[0]].append(text + "\n\n")
    assert {n: "".join(v).encode() for n, v in by_file.items()} == _files(str(tmp_path / "off"))
    assert base["duplicates_injected"] == record["duplicates_injected"]
    # a record written before the option (no such key) still matches the default spec
    with open(tmp_path / "off" / "_corpus.json") as f:
        assert json.load(f)["spec"] == scale_corpus.spec_record(_spec())
    assert scale_corpus.ensure_corpus(_spec(), str(tmp_path / "off"))["seconds"] == base["seconds"]


def test_edit_text_keeps_lines_and_edits_the_share_asked():
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(f"w{i}x{j}" for j in range(20)) for i in range(10))
    out = scale_corpus.edit_text(text, 0.10, rng, ["zz"])
    assert "\n" in out and "  " not in out and not out.startswith(" ") and "\n " not in out and " \n" not in out
    words = out.split()
    assert 200 - 20 <= len(words) <= 200 + 20 and 0 < words.count("zz") <= 20
    assert scale_corpus.jaccard(text, text) == 1.0 and scale_corpus.jaccard("a b c d e", "a b c d f") == 0.0
