"""The data chain on a local multi-node cluster (``ray.cluster_utils.Cluster``: a raylet per node).

In a child process (so the session's local Ray is left alone), on a head and 3 worker nodes of 1 CPU,
the whole chain read -> nsp_pairs (the DAG ``--until nsp_pairs``: ``run_until``), removing a worker
node (``remove_node``) while ``tokenize`` runs and another while ``nsp_pairs`` runs: every stage's
bytes must equal a 1-node run's (this test's own Ray). read, clean, split and wordpiece run on all 4 nodes undisturbed; tokenize and nsp_pairs
complete through Ray's retries.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from cluster.ray_settings import system_config, use_node_env

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs")
WATCHDOG_S = 600  # the chain takes 2-4 minutes; past this, the child reports what it waits on and exits


def _config(corpus: str, root: str):
    from pipelines.presets import build_run_config

    # small blocks and shards, so every stage has many units for the nodes to share
    return build_run_config({"root": root, "pretrain": {"phases": [{"max_seq_length": 64}]}, "data": {
        "inputs": [corpus], "read": {"block_bytes": 64 << 10, "rows_per_shard": 60},
        "clean": {"min_chars": 40, "num_buckets": 3}, "wordpiece": {"vocab_size": 400}, "nsp_pairs": {"num_partitions": 5},
        # near_dedup's own four-node and node-loss tests are in test_near_dedup.py
        "near_dedup": {"enabled": False}}})


def run_chain(corpus: str, root: str) -> dict[str, str]:
    """{stage: its output} of the DAG run ``--until nsp_pairs``."""
    from pipelines.bert_dag import run_until
    from tests.pipelines.test_preprocess import data_outputs

    return data_outputs(run_until(_config(corpus, root), "nsp_pairs"))


def write_corpus(demo_files: list[str], path: str) -> str:
    """~300 KB of the demo corpus in one text file, with a few exact duplicate documents."""
    from pipelines.stages import read

    docs = [t for f in demo_files for table in read.read_file(f, read.ReadConfig()) for t in table.column("text").to_pylist()]
    docs = docs[:900] + docs[100:110]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
    return path


def digests(uris: dict[str, str]) -> dict[str, dict[str, str]]:
    """Per stage: sha256 of every file but stats.json (it holds the seconds)."""
    from pipelines import storage

    return {stage: {os.path.relpath(f, uri): hashlib.sha256(storage.read_bytes(f)).hexdigest()
                    for f in storage.list_files(uri) if not f.endswith("stats.json")}
            for stage, uri in uris.items()}


def _remove_when_running(cluster, node, root: str, stage: str, removed: list, deadline_s: float = 300) -> None:
    """Remove ``node`` once ``stage`` has written its first file under its temp dir in ``root``."""
    stage_dir = os.path.join(root, stage)
    end = time.time() + deadline_s
    while time.time() < end:
        if os.path.isdir(stage_dir):
            for name in os.listdir(stage_dir):
                tmp = os.path.join(stage_dir, name)
                if name.startswith("_tmp-") and any(f.endswith(".parquet") for f in os.listdir(tmp)):
                    cluster.remove_node(node, allow_graceful=False)
                    removed.append(stage)
                    return
        time.sleep(0.02)


def _watchdog(seconds: float, done: threading.Event) -> None:
    """If the chain has not finished in ``seconds``, write what it waits on to stderr and exit 3:
    the driver's threads, the nodes, the tail of Ray Data's logs (its operators' progress). The state
    API's task and actor lists need the dashboard, which this cluster runs without."""
    if done.wait(seconds):
        return
    import faulthandler
    import glob

    import ray

    print(f"WATCHDOG: the chain has not finished in {seconds:.0f} s", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    print("NODES", [(n["NodeID"][:8], n["Alive"], n["Resources"].get("CPU")) for n in ray.nodes()], file=sys.stderr)
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    for log in sorted(glob.glob(os.path.join(session, "logs", "ray-data", "*.log")), key=os.path.getmtime)[-2:]:
        with open(log, errors="replace") as f:
            print(f"--- {log}\n", *f.readlines()[-60:], sep="", file=sys.stderr)
    sys.stderr.flush()
    os._exit(3)


def _cluster_main(corpus: str, out_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    use_node_env()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "_system_config": system_config()})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        report: dict = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
        root = os.path.join(out_dir, "chaos")
        removed: list[str] = []
        watchers = [threading.Thread(target=_remove_when_running, args=(cluster, node, root, stage, removed), daemon=True)
                    for node, stage in ((workers[0], "tokenize"), (workers[1], "nsp_pairs"))]
        done = threading.Event()
        for w in [*watchers, threading.Thread(target=_watchdog, args=(WATCHDOG_S, done), daemon=True)]:
            w.start()
        report["chaos"] = digests(run_chain(corpus, root))
        done.set()
        report["removed"] = removed
        for _ in range(60):  # the GCS marks a removed node dead after its heartbeats time out
            report["nodes_after"] = len([n for n in ray.nodes() if n["Alive"]])
            if report["nodes_after"] == 2:
                break
            time.sleep(1)
        print("REPORT " + json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.cluster
@pytest.mark.slow
def test_chain_on_four_nodes_with_node_loss_gives_the_one_node_bytes(ray_session, demo_files, tmp_path):
    corpus = write_corpus(demo_files, str(tmp_path / "corpus.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PROJECT_ROOT, os.environ.get("PYTHONPATH", "")])}
    out, err = tmp_path / "child.out", tmp_path / "child.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), corpus, str(tmp_path / "cluster")],
                                env=env, stdout=stdout, stderr=stderr, text=True)
        try:
            proc.wait(timeout=WATCHDOG_S + 240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stdout, stderr = out.read_text(), err.read_text(errors="replace")
    lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-12000:]}"
    report = json.loads(lines[0][len("REPORT "):])
    one_node = digests(run_chain(corpus, str(tmp_path / "one")))
    for stage in STAGES:
        assert len(one_node[stage]) > (2 if stage != "wordpiece" else 1), stage  # several files: work was shared
        assert report["chaos"][stage] == one_node[stage], stage
    assert report["nodes"] == 4 and report["removed"] == ["tokenize", "nsp_pairs"] and report["nodes_after"] == 2


if __name__ == "__main__":
    _cluster_main(sys.argv[1], sys.argv[2])
