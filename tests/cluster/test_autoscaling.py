"""Autoscaling with Ray's fake multi-node provider: resource requests from a Data stage and a GPU
training task scale worker nodes up from zero and, once idle, back down to zero.

The cluster is a ``ray start --head --autoscaling-config`` of our own (RAY_FAKE_CLUSTER=1) in its own
process group, temp dir and ports, so the test session's Ray and anyone else's are untouched.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cluster.local import LocalHead

DRIVER = textwrap.dedent('''
    import json, threading, time
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
    # A Data stage: 1 CPU per task; the head has 0 CPUs, so only a new CPU worker can run it.
    ds = ray.data.range(8, override_num_blocks=4).map_batches(
        lambda b: (time.sleep(1), b)[1], num_cpus=1, batch_size=2)
    rows = ds.count()

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
    print("RESULT " + json.dumps({"rows": rows, "gpu_ids": gpu_ids, "peak": peak,
                                  "left": len(workers()), "down_s": round(time.time() - t0, 1)}))
''')


@pytest.mark.cluster
@pytest.mark.slow
def test_fake_cluster_scales_up_from_zero_and_back_down(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    with LocalHead.fake_autoscaling(cpu_workers_max=2, gpu_workers_max=1, idle_timeout_minutes=0.1) as head:
        proc = subprocess.run([sys.executable, str(script)], env=head.client_env(), capture_output=True,
                              text=True, timeout=240)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["rows"] == 8 and result["gpu_ids"] == [0]
    assert result["peak"]["cpu_worker"] >= 1 and result["peak"]["gpu_worker"] == 1
    assert result["left"] == 0, f"workers not scaled back down: {result}"
