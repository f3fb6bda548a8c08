"""Autoscaling with Ray's fake multi-node provider: the pipeline's Data stages (run by the CLI) and a
GPU training task scale worker nodes up from zero and, once idle, back down to zero.

The cluster is a ``ray start --head --autoscaling-config`` of our own (RAY_FAKE_CLUSTER=1) in its own
process group, temp dir and ports, so the test session's Ray and anyone else's are untouched.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

import pytest

from cluster.local import LocalHead

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DRIVER = textwrap.dedent('''
    import json, sys, threading, time
    import ray

    ray.init(log_to_driver=False)  # RAY_ADDRESS points at the fake cluster's head

    def workers():
        return [n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"]]

    assert workers() == [], "the cluster must start with zero workers"
    peak = {"cpu_worker": 0, "gpu_worker": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            ws = workers()
            gpu = sum(1 for n in ws if n["Resources"].get("GPU", 0) > 0)
            peak["gpu_worker"] = max(peak["gpu_worker"], gpu)
            peak["cpu_worker"] = max(peak["cpu_worker"], len(ws) - gpu)
            time.sleep(0.25)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # The pipeline's Data stages (read, clean) through the CLI: their Ray Data tasks ask for CPUs and
    # the head has none, so only new CPU workers can run them.
    from pipelines.cli import main
    from pipelines.dag import read_manifest

    rc = main(["run", "demo", "root=" + sys.argv[2], "data.inputs=[" + sys.argv[1] + "]", "--until", "clean"])
    states = {n: s["state"] for n, s in read_manifest(sys.argv[2])["stages"].items()}

    # A training worker: asks for a GPU, which only the GPU worker type has.
    @ray.remote(num_gpus=1, num_cpus=1)
    def train_step():
        return ray.get_gpu_ids()

    gpu_ids = ray.get(train_step.remote())
    t0 = time.time()
    while workers() and time.time() - t0 < 90:
        time.sleep(0.5)
    done.set()
    watcher.join()
    print("RESULT " + json.dumps({"rc": rc, "states": states, "gpu_ids": gpu_ids, "peak": peak,
                                  "left": len(workers()), "down_s": round(time.time() - t0, 1)}))
''')


@pytest.mark.cluster
@pytest.mark.slow
def test_fake_cluster_scales_up_from_zero_and_back_down(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    corpus = tmp_path / "docs.txt"
    with gzip.open(os.path.join(REPO, "pipelines", "demo", "corpus", "python-000.txt.gz"), "rt") as f:
        corpus.write_text("\n\n".join(f.read().split("\n\n")[:200]) + "\n")
    with LocalHead.fake_autoscaling(cpu_workers_max=2, gpu_workers_max=1, idle_timeout_minutes=0.1) as head:
        env = dict(head.client_env(), PYTHONPATH=REPO)
        proc = subprocess.run([sys.executable, str(script), str(corpus), str(tmp_path / "run")], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["rc"] == 0 and result["states"] == {"read": "done", "clean": "done"}
    assert result["gpu_ids"] == [0]
    assert result["peak"]["cpu_worker"] >= 1 and result["peak"]["gpu_worker"] == 1
    assert result["left"] == 0, f"workers not scaled back down: {result}"
