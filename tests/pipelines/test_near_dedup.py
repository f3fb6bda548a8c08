"""near_dedup: exact clusters and survivors on tiny tables, the LSH S-curve on pairs of known
Jaccard similarity, config errors, and the Ray Data stage against the one-process core
(byte-identical whatever the partition or task count)."""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import math
import os
import random
import sys

import numpy as np
import pyarrow as pa
import pytest

from pipelines.schemas import DOCUMENTS
from pipelines.stages import near_dedup as nd
from pipelines.typed_config import ConfigError

CFG = nd.NearDedupConfig()


class Words:
    """Distinct words on demand, so that pieces of text share shingles only where a test says so."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, n: int) -> list[str]:
        self.count += n
        return [f"w{i}" for i in range(self.count - n, self.count)]


def docs(*texts: str, prefix: str = "d") -> pa.Table:
    return pa.table({"doc_id": [f"{prefix}{i:03d}" for i in range(len(texts))], "text": list(texts)}, schema=DOCUMENTS)


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)} if len(words) >= n else {tuple(words)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def removed_pairs(removed: pa.Table) -> dict[str, str]:
    return dict(zip(removed.column("doc_id").to_pylist(), removed.column("survivor_id").to_pylist()))


def checked_edges(table: pa.Table, cfg: nd.NearDedupConfig = CFG) -> set[tuple[int, int]]:
    """The edges that pass the Jaccard check, as (row, row)."""
    signed, _ = nd.signatures(table, cfg)
    edges = nd.bucket_edges(nd.bucket_rows(signed), cfg.all_pairs_up_to)
    sig = nd._binary_rows(signed.column("signature"), np.uint32, cfg.num_perm)
    lo, hi = edges.column("lo").to_numpy(), edges.column("hi").to_numpy()
    est = (sig[lo] == sig[hi]).mean(axis=1)
    return {(int(a), int(b)) for a, b, e in zip(lo, hi, est) if e >= cfg.threshold}


# --- exact clusters on tiny tables -------------------------------------------------------------
def test_chain_is_one_component_by_transitivity():
    words = Words()
    segments = [" ".join(words(40)) for _ in range(12)]
    a, b, c = (" ".join(segments[i:i + 10]) for i in (0, 1, 2))
    other = " ".join(words(400))
    table = docs(other, a, b, c)  # d000 unrelated, d001 ~ d002 ~ d003
    assert jaccard(a, b) > 0.8 and jaccard(b, c) > 0.8 and jaccard(a, c) < 0.7
    edges = checked_edges(table)
    assert (1, 3) not in edges and {(1, 2), (2, 3)} <= edges or {(1, 2), (1, 3)} <= edges
    kept, removed, stats = nd.core(table, CFG)
    assert kept.column("doc_id").to_pylist() == ["d000", "d001"]
    assert removed_pairs(removed) == {"d002": "d001", "d003": "d001"}
    assert (stats["clusters"], stats["largest_cluster"], stats["removed"]) == (1, 3, 2)


def test_chain_needs_its_middle_link():
    """Without the middle document, the chain's ends are not duplicates of each other."""
    words = Words()
    segments = [" ".join(words(40)) for _ in range(12)]
    a, c = " ".join(segments[0:10]), " ".join(segments[2:12])
    kept, removed, stats = nd.core(docs(a, c), CFG)
    assert kept.num_rows == 2 and removed.num_rows == 0 and stats["clusters"] == 0


def test_giant_bucket_is_a_star_not_all_pairs():
    words = Words()
    boiler = " ".join(words(300))
    k = 60
    table = docs(*[boiler] * k, " ".join(words(300)))
    signed, _ = nd.signatures(table, CFG)
    edges = nd.bucket_edges(nd.bucket_rows(signed), CFG.all_pairs_up_to)
    assert k > CFG.all_pairs_up_to and edges.num_rows == k - 1  # every bucket of the 60 copies gives the same 59 star edges
    assert set(edges.column("lo").to_pylist()) == {0}
    kept, removed, stats = nd.core(table, CFG)
    assert kept.column("doc_id").to_pylist() == ["d000", f"d{k:03d}"]
    assert set(removed_pairs(removed).values()) == {"d000"} and removed.num_rows == k - 1
    assert (stats["clusters"], stats["largest_cluster"], stats["candidate_pairs"]) == (1, k, k - 1)


def buckets(*rows: tuple[int, int]) -> pa.Table:
    return pa.table({"bucket": [b for b, _ in rows], "node": [n for _, n in rows]}, schema=nd.BUCKETS)


def edge_set(edges: pa.Table) -> set[tuple[int, int]]:
    return set(zip(edges.column("lo").to_pylist(), edges.column("hi").to_pylist()))


def test_a_small_bucket_gives_all_its_pairs_a_large_one_a_star():
    small = [(7, n) for n in (30, 10, 20, 10)]  # a node twice in a bucket counts once
    large = [(-3, n) for n in range(100, 105)]
    edges = nd.bucket_edges(buckets(*small, *large, (9, 1)), 4)
    assert edge_set(edges) == {(10, 20), (10, 30), (20, 30)} | {(100, n) for n in range(101, 105)}
    assert edges.column("lo").to_pylist() == sorted(edges.column("lo").to_pylist())
    assert edge_set(nd.bucket_edges(buckets(*small), 1)) == {(10, 20), (10, 30)}


def test_a_pair_whose_bucket_centre_fails_the_check_is_still_compared():
    """Nodes 0, 1, 2 share a bucket; 1 ~ 2 (90% of MinHash values equal) but 0 matches each on 50%
    only: a star around 0 loses the pair, all pairs keep it."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**32, CFG.num_perm, dtype=np.uint32)
    y, c = x.copy(), x.copy()
    y[: CFG.num_perm // 10] += 1
    c[CFG.num_perm // 2:] += 2
    sig = np.stack([c, x, y])

    def checked(limit: int) -> set[tuple[int, int]]:
        edges = nd.bucket_edges(buckets((5, 0), (5, 1), (5, 2)), limit)
        lo, hi = edges.column("lo").to_numpy(), edges.column("hi").to_numpy()
        edges = edges.append_column("sig_lo", nd._rows_as_binary(sig[lo])).append_column(
            "sig_hi", nd._rows_as_binary(sig[hi]))
        return edge_set(nd.check_edges(edges, CFG.num_perm, CFG.threshold))

    assert checked(1) == set() and checked(CFG.all_pairs_up_to) == {(1, 2)}


def test_survivor_is_the_smallest_doc_id_whatever_the_row_order():
    words = Words()
    base = words(200)
    near = list(base)
    near[100] = "changed"
    table = pa.table({"doc_id": ["z", "a", "m"], "text": [" ".join(base), " ".join(near), " ".join(words(50))]},
                     schema=DOCUMENTS)
    ordered = table.take([1, 2, 0])  # doc_id order: the stage's input order
    kept, removed, _ = nd.core(ordered, CFG)
    assert kept.column("doc_id").to_pylist() == ["a", "m"] and removed_pairs(removed) == {"z": "a"}


def test_empty_and_one_word_documents():
    words = Words()
    long = " ".join(words(100))
    table = docs("", "", "hello", "hello", "hello world", "  \n ", long, "hello " + long)
    kept, removed, stats = nd.core(table, CFG)
    # empty documents have no shingle: never candidates, each its own cluster; a short document
    # (fewer than ngram words) is one shingle of all its words: only the same words match it
    # ("hello" is not a near-duplicate of "hello world", nor of a long text that starts with it)
    assert removed_pairs(removed) == {"d003": "d002", "d007": "d006"}
    assert (stats["empty_documents"], stats["short_documents"]) == (3, 6)
    assert (stats["documents_in"], stats["documents"], stats["clusters"]) == (8, 6, 2)


def test_signatures_depend_on_the_seed_and_on_nothing_else():
    table = docs("the quick brown fox jumps over the lazy dog again and again", "one two three")
    a, _ = nd.signatures(table, CFG)
    b, _ = nd.signatures(pa.concat_tables([table.slice(1), table.slice(0, 1)]).take([1, 0]), CFG)
    c, _ = nd.signatures(table, nd.NearDedupConfig(seed=1))
    assert a.column("signature").equals(b.column("signature"))
    assert not a.column("signature").equals(c.column("signature"))


# --- the S-curve --------------------------------------------------------------------------------
def pair_with_jaccard(words: Words, target: float, shared: int = 400) -> tuple[str, str, float]:
    """Two documents S + X1 and S + X2 (all words distinct): 5-gram Jaccard (s-4)/(s-4 + 2x) ~ target."""
    extra = max(1, round((shared - 4) * (1 - target) / (2 * target)))
    common = words(shared)
    a, b = " ".join(common + words(extra)), " ".join(common + words(extra))
    return a, b, (shared - 4) / (shared - 4 + 2 * extra)


ENGINES = ["numpy"] + (["rensa"] if importlib.util.find_spec("rensa") else [])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("target", [0.45, 0.72, 0.9])
def test_fraction_grouped_follows_the_s_curve(target, engine):
    cfg = nd.NearDedupConfig(check_jaccard=False, seed=7, minhash_engine=engine)
    words = Words()
    pairs = [pair_with_jaccard(words, target) for _ in range(300)]
    s = pairs[0][2]
    assert jaccard(pairs[0][0], pairs[0][1]) == pytest.approx(s)
    table = docs(*itertools.chain.from_iterable(p[:2] for p in pairs))
    signed, _ = nd.signatures(table, cfg)
    edges = nd.bucket_edges(nd.bucket_rows(signed), cfg.all_pairs_up_to)
    lo, hi = edges.column("lo").to_numpy(), edges.column("hi").to_numpy()
    assert np.all(hi == lo + 1) and np.all(lo % 2 == 0)  # only a pair's two documents ever meet
    n, p = len(pairs), float(nd.s_curve(s, cfg.bands, cfg.rows))
    grouped = len(lo) / n
    # a 4-sigma binomial bound (plus one pair, for p near 0 or 1)
    assert abs(grouped - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1 / n, (s, grouped, p)


@pytest.mark.parametrize("engine", ENGINES)
def test_estimated_jaccard_is_unbiased(engine):
    cfg = nd.NearDedupConfig(minhash_engine=engine)
    words = Words()
    est = []
    for _ in range(100):
        a, b, s = pair_with_jaccard(words, 0.6)
        signed, _ = nd.signatures(docs(a, b), cfg)
        sig = nd._binary_rows(signed.column("signature"), np.uint32, cfg.num_perm)
        est.append((sig[0] == sig[1]).mean())
    assert abs(np.mean(est) - s) < 4 * math.sqrt(s * (1 - s) / CFG.num_perm / len(est))


# --- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, key", [
    ({"threshold": 0.0}, "near_dedup.threshold"), ({"threshold": 1.0}, "near_dedup.threshold"),
    ({"threshold": -0.5}, "near_dedup.threshold"), ({"bands": 10}, "near_dedup.num_perm"),
    ({"num_perm": 128}, "near_dedup.num_perm"), ({"ngram": 0}, "near_dedup.ngram"),
    ({"num_partitions": 0}, "near_dedup.num_partitions"), ({"all_pairs_up_to": 0}, "near_dedup.all_pairs_up_to"),
])
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        nd.NearDedupConfig(**kwargs)


def test_bad_config_from_yaml_values_names_the_key():
    from pipelines.typed_config import from_dict

    with pytest.raises(ConfigError, match=r"near_dedup\.num_perm"):
        from_dict(nd.NearDedupConfig, {"bands": 16, "rows": 8, "num_perm": 112})
    assert from_dict(nd.NearDedupConfig, {"bands": 16, "rows": 8, "num_perm": 128}).num_perm == 128


# --- the Ray Data stage ----------------------------------------------------------------------------
def corpus(seed: int = 0, num_docs: int = 240) -> pa.Table:
    """Documents with near-duplicates (a few words changed), a chain, a giant bucket, short and
    empty documents; doc_ids in row order."""
    rng = random.Random(seed)
    words = Words()
    texts: list[str] = []
    originals = []
    boiler = " ".join(words(150))
    for i in range(num_docs):
        kind = i % 6
        if kind == 1 and originals:
            base = rng.choice(originals).split()
            for j in rng.sample(range(len(base)), 3):
                base[j] = "edit"
            texts.append(" ".join(base))
        elif kind == 2 and i % 12 == 2:
            texts.append(boiler + " " + " ".join(words(2)))
        elif kind == 3 and i % 24 == 3:
            texts.append(rng.choice(["", "one", "two words"]))
        else:
            text = " ".join(words(rng.randint(50, 300)))
            originals.append(text)
            texts.append(text)
    segments = [" ".join(words(40)) for _ in range(12)]
    texts += [" ".join(segments[i:i + 10]) for i in (0, 1, 2)]
    return pa.table({"doc_id": [f"doc#{i:012d}" for i in range(len(texts))], "text": texts}, schema=DOCUMENTS)


def write_documents(root: str, table: pa.Table, num_shards: int) -> str:
    """``table`` as a completed DOCUMENTS stage output of ``num_shards`` files."""
    from pipelines import stage_store

    bounds = np.linspace(0, table.num_rows, num_shards + 1).astype(int)

    def produce(writer):
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            writer.write_table(table.slice(lo, hi - lo), DOCUMENTS)

    return stage_store.run_stage(root, "clean", {"test": num_shards}, (), produce)


def digests(uri: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(uri):
        for name in files:
            if name not in ("stats.json", "manifest.json"):
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, uri)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_stage_equals_the_core_and_its_bytes_do_not_depend_on_partitions_or_tasks(ray_session, tmp_path):
    from pipelines import parquet_files, stage_store

    table = corpus()
    documents = write_documents(str(tmp_path), table, 4)
    kept, removed, core_stats = nd.core(table, CFG)
    assert core_stats["removed"] > 20 and core_stats["largest_cluster"] >= 10

    runs = []
    for cfg, concurrency in ((CFG, None), (nd.NearDedupConfig(num_partitions=1), 1),
                             (nd.NearDedupConfig(num_partitions=7), 2)):
        uri = nd.run_near_dedup(cfg, documents, str(tmp_path), concurrency=concurrency)
        runs.append((uri, digests(uri), stage_store.read_stats(uri)))
    uri, files, stats = runs[0]
    assert stage_store.read_table(uri).equals(kept)
    audit = pa.concat_tables([parquet_files.read_parquet(os.path.join(uri, "removed", f))
                              for f in sorted(os.listdir(os.path.join(uri, "removed")))])
    assert audit.sort_by("doc_id").equals(removed.sort_by("doc_id"))
    for key in ("documents_in", "documents", "removed", "clusters", "largest_cluster", "short_documents",
                "empty_documents", "candidate_pairs", "checked_pairs"):
        assert stats[key] == core_stats[key], key
    assert stats["doc_ids_in_order"] and stats["iterations"] >= 1
    assert sorted(f for f in files if f.startswith("part-")) == [f"part-{s:05d}-0000.parquet" for s in range(4)]
    for other_uri, other_files, _ in runs[1:]:
        assert other_uri != uri and other_files == files
    # a re-run is skipped; a disabled stage hands its input on
    assert nd.run_near_dedup(CFG, documents, str(tmp_path)) == uri
    assert nd.run_near_dedup(nd.NearDedupConfig(enabled=False), documents, str(tmp_path)) == documents


def test_stage_without_any_duplicate(ray_session, tmp_path):
    from pipelines import stage_store

    words = Words()
    table = docs(*[" ".join(words(80)) for _ in range(30)])
    uri = nd.run_near_dedup(CFG, write_documents(str(tmp_path), table, 3), str(tmp_path))
    assert stage_store.read_table(uri).equals(table)
    stats = stage_store.read_stats(uri)
    assert (stats["removed"], stats["clusters"], stats["iterations"]) == (0, 0, 0)
    assert not os.path.exists(os.path.join(uri, "removed"))


# --- several nodes ----------------------------------------------------------------------------------
def _remove_when_signing(cluster, node, out_dir: str, removed: list, deadline_s: float = 300) -> None:
    """Remove ``node`` once the stage has written its first signature file into its temp dir."""
    import time

    stage_dir, end = os.path.join(out_dir, nd.STAGE), time.time() + deadline_s
    while time.time() < end and not removed:
        for name in os.listdir(stage_dir) if os.path.isdir(stage_dir) else []:
            tmp = os.path.join(stage_dir, name)
            if name.startswith("_tmp-") and any(f.startswith("sig-") for f in os.listdir(tmp)):
                cluster.remove_node(node, allow_graceful=False)
                removed.append(name)
                break
        time.sleep(0.02)


def _cluster_main(documents: str, out_dir: str, lose_node: bool = False) -> None:
    """In a child process: a head and 3 worker nodes of 1 CPU (``ray.cluster_utils.Cluster``); the
    stage on ``documents`` into ``out_dir`` (``lose_node``: a worker node removed once the signature
    pass has written its first file); prints the output's digests."""
    import json
    import threading

    import ray
    from ray.cluster_utils import Cluster

    from cluster.ray_settings import system_config, use_node_env

    use_node_env()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "_system_config": system_config()})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        nodes = len([n for n in ray.nodes() if n["Alive"]])
        removed: list = []
        if lose_node:
            threading.Thread(target=_remove_when_signing, args=(cluster, workers[0], out_dir, removed),
                             daemon=True).start()
        uri = nd.run_near_dedup(nd.NearDedupConfig(num_partitions=5), documents, out_dir)
        print("REPORT " + json.dumps({"nodes": nodes, "removed": len(removed), "digests": digests(uri)}), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("lose_node", [False, True], ids=["four_nodes", "node_lost"])
def test_four_nodes_give_the_one_node_bytes(ray_session, tmp_path, lose_node):
    import json
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    documents = write_documents(str(tmp_path / "in"), corpus(seed=1), 6)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), documents, str(tmp_path / "cluster"),
                           "lose" if lose_node else ""],
                          env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
    report = json.loads(lines[0][len("REPORT "):])
    one_node = digests(nd.run_near_dedup(nd.NearDedupConfig(num_partitions=5), documents, str(tmp_path / "one")))
    assert report["nodes"] == 4 and report["removed"] == int(lose_node)
    assert len([f for f in one_node if f.startswith("part-")]) == 6 and any(f.startswith("removed/") for f in one_node)
    assert report["digests"] == one_node


if __name__ == "__main__":
    _cluster_main(sys.argv[1], sys.argv[2], sys.argv[3] == "lose")
