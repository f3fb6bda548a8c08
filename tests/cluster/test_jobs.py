"""Ray Jobs against a real ``ray start --head`` on this machine: submit, follow logs, stop, bad address."""
from __future__ import annotations

import time

import pytest

from cluster import jobs
from cluster.local import LocalHead, free_port


@pytest.fixture(scope="module")
def head():
    with LocalHead(num_cpus=1) as h:
        yield h


@pytest.mark.cluster
def test_submit_follow_and_stop(head):
    job = jobs.submit(head.dashboard_url,
                      "python -c 'import pipelines.dag, ray; ray.init(); print(\"HELLO\", ray.cluster_resources()[\"CPU\"])'")
    chunks: list[str] = []
    assert jobs.follow(head.dashboard_url, job, write=chunks.append) == "SUCCEEDED"
    assert "HELLO 1.0" in "".join(chunks)  # the project travelled with the job (pipelines.dag imported)
    assert "HELLO 1.0" in jobs.logs(head.dashboard_url, job)

    job = jobs.submit(head.dashboard_url, "python -c 'import time; print(\"SLEEPING\", flush=True); time.sleep(600)'")
    deadline = time.time() + 60
    while jobs.status(head.dashboard_url, job) != "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    assert jobs.stop(head.dashboard_url, job)
    assert jobs.wait(head.dashboard_url, job, timeout_s=60) == "STOPPED"


@pytest.mark.cluster
def test_unreachable_address_is_a_clear_error():
    t0 = time.time()
    with pytest.raises(jobs.ClusterError, match=r"cannot reach a Ray cluster at http://127.0.0.1:\d+"):
        jobs.submit(f"http://127.0.0.1:{free_port()}", "echo hi")
    assert time.time() - t0 < 30
    with pytest.raises(jobs.ClusterError, match="expected the dashboard URL"):
        jobs.connect("127.0.0.1:6379")
