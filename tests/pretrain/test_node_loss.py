"""A node removed in the middle of pretraining, on a multi-node ``ray.cluster_utils.Cluster`` (real raylets)
in a child process, so the session's local Ray is left alone.

The head has no CPUs (it holds the driver and the Train controller, as a real head would); two 1-CPU worker
nodes hold the two Train workers, one each. Rank 1 stops after step 6, once the step-4 checkpoint has been
committed, and its node is killed (``remove_node``, no grace): raylet, its workers and whatever masking
actors ran there. A replacement node joins (as an autoscaler would start one); Ray Train restarts the
worker group on the surviving node and the new one and restores the step-4 checkpoint. The run must log every step once and end at the same step with the same rows consumed as
an undisturbed run: the rows of every step are the epoch order's (``inputs``: a pure function of the seed
and the instances, which ``test_data_order`` checks against the real stream).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cluster.ray_settings import system_config, use_node_env

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, MICRO, GLOBAL, WORLD = 8, 8, 16, 2


def _cfg():
    from pipelines.pretrain import PretrainConfig
    from pipelines.typed_config import from_dict

    return from_dict(PretrainConfig, {
        "model_preset": "tiny", "num_workers": WORLD, "seed": 3, "checkpoint_every": 4, "metrics_every": 1,
        "max_failures": 1, "deepspeed": {"zero_stage": 1},
        "phases": [{"max_seq_length": 64, "global_batch_size": GLOBAL, "micro_batch_size": MICRO, "num_steps": STEPS,
                    "warmup_steps": 2, "learning_rate": 1e-3, "max_predictions_per_seq": 10}]})


def _remove_node_when_held(cluster, marker: str, report: dict, training: threading.Thread) -> None:
    """Wait for the held rank's marker (its node id), kill that node without grace, start a replacement.
    In the main thread: ``Cluster.add_node`` sets signal handlers, which only the main thread may."""
    while not os.path.exists(marker) and training.is_alive():
        time.sleep(0.2)
    if not training.is_alive():
        return
    node_id = open(marker).read().strip()
    victim = next(n for n in cluster.worker_nodes if n.node_id == node_id)
    cluster.remove_node(victim, allow_graceful=False)
    report["removed"] = node_id
    report["replacement"] = cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20).node_id


def _cluster_main(instances: str, vocab: str, out: str) -> None:
    """In a child process: the cluster, the run (in a thread) with rank 1 held after step 6, a report on stdout."""
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    from pipelines.pretrain import run_pretraining
    from faults import FaultInjection

    # Node death is noticed by the GCS health check: every 0.5 s, dead after 2 misses (default 5 x 3 s).
    use_node_env()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 100 * 2**20,
        "_system_config": {**system_config(), "health_check_period_ms": 500, "health_check_failure_threshold": 2}})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    marker = os.path.join(out, "held-marker")
    report: dict = {"worker_nodes": [n.node_id for n in workers], "head": cluster.head_node.node_id}
    fault = FaultInjection(step=6, rank=1, marker_path=marker, hold=True)

    def train() -> None:
        report["export"] = run_pretraining(_cfg(), instances, vocab, os.path.join(out, "run"),
                                           instance_log=os.path.join(out, "instances-log"), fault_injection=fault)

    training = threading.Thread(target=train, daemon=True)
    try:
        training.start()
        _remove_node_when_held(cluster, marker, report, training)
        training.join()
        report["alive_after"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        print("REPORT " + json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _expected_ids(instances: str) -> dict[tuple[int, int], list[str]]:
    """(rank, step) -> instance_ids an undisturbed 2-worker run reads: epoch 0's order, dealt by micro-batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.pretrain.inputs import InstancePlan, epoch_windows, window_permutation
    from pipelines.pretrain.trainer import instance_files

    plan = InstancePlan.from_files(instance_files(instances))
    ids = pa.concat_arrays([pq.read_table(f, columns=["instance_id"]).column(0).combine_chunks()
                            for f in plan.files]).to_numpy(zero_copy_only=False)
    offsets, chunks = np.concatenate([[0], np.cumsum(plan.rows)]), plan.chunks()
    order = np.concatenate([np.concatenate([offsets[f] + np.arange(a, b) for f, a, b in (chunks[c] for c in w.chunks)])
                            [window_permutation(_cfg().seed, 0, k, w.size)]
                            for k, w in enumerate(epoch_windows(plan, _cfg().seed, 0))])
    return {(rank, step): [str(i) for i in ids[order[(step - 1) * GLOBAL + rank * MICRO:][:MICRO]]]
            for rank in range(WORLD) for step in range(1, STEPS + 1)}


def test_node_removed_mid_run_restores_last_checkpoint_and_reads_the_same_rows(pretrain_corpus, tmp_path):
    instances, vocab, _ = pretrain_corpus
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PROJECT_ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), instances, vocab, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(lines[0][len("REPORT "):])
    # A worker node, not the head, was removed, and it stayed gone: the run finished on the survivor and
    # the replacement.
    assert report["removed"] in report["worker_nodes"]
    assert report["alive_after"] == sorted({report["head"], report["replacement"], *report["worker_nodes"]}
                                           - {report["removed"]})

    expected = _expected_ids(instances)
    for rank in range(WORLD):
        with open(tmp_path / "instances-log" / f"rank{rank}.jsonl", encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        for line in lines:
            assert line["micro"] == 0 and line["ids"] == expected[(rank, line["step"])], (rank, line["step"])
        steps = [line["step"] for line in lines]
        # Rank 1 was held after step 6; rank 0 may have read step 7 before it blocked on rank 1. After the
        # restore from step 4 both read steps 5..8 once more.
        held = [1, 2, 3, 4, 5, 6] if rank == 1 else steps[:7] if steps[6] == 7 else [1, 2, 3, 4, 5, 6]
        assert steps[:6] == [1, 2, 3, 4, 5, 6] and steps == held + [5, 6, 7, 8], (rank, steps)

    from oracles.schedule import assert_lr_schedule  # here: the child process has no tests/ on its path
    from pipelines.pretrain.metrics import read_metrics

    curve = read_metrics(os.path.join(os.path.dirname(report["export"]), "metrics.jsonl"))
    # Every step once (the log restarted at 4), each at its scheduled rate: DeepSpeed's own scheduler
    # state came back with the checkpoint.
    assert_lr_schedule(curve, _cfg().phases[0], STEPS)
    states = [json.load(open(os.path.join(d, "train_state.json"))) for d, _, files in os.walk(tmp_path / "run")
              if "train_state.json" in files]
    final = max(states, key=lambda s: s["step"])
    assert (final["step"], final["samples_in_epoch"], final["epoch"], final["world_size"]) == (STEPS, STEPS * GLOBAL, 0, 2)


if __name__ == "__main__":
    _cluster_main(*sys.argv[1:4])
