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


@pytest.mark.cluster
@pytest.mark.slow
def test_cli_submit_runs_a_config_as_a_job(head, tmp_path, capsys):
    """`bert-pipeline submit` validates locally, ships the project, the job runs the DAG on the head."""
    import gzip
    import os

    from pipelines.cli import main
    from pipelines.dag import read_manifest

    corpus = tmp_path / "docs.txt"
    demo = os.path.join(jobs.PROJECT_ROOT, "pipelines", "demo", "corpus", "python-000.txt.gz")
    with gzip.open(demo, "rt", encoding="utf-8") as f:
        corpus.write_text("\n\n".join(f.read().split("\n\n")[:100]) + "\n", encoding="utf-8")
    root = tmp_path / "run"
    args = ["demo", f"root={root}", f"data.inputs=[{corpus}]", "--until", "clean"]

    assert main(["submit", "--address", head.dashboard_url, "demo", "data.clean.min_chars=ten"]) == 2
    assert "data.clean.min_chars: expected an integer" in capsys.readouterr().err

    assert main(["submit", "--address", head.dashboard_url, *args]) == 0
    out = capsys.readouterr().out
    job = out.split("submitted job ", 1)[1].split()[0]
    assert "[2/2] clean: done" in out and f"job {job}: SUCCEEDED" in out
    printed = out.split(f"submitted job {job}", 1)[1].splitlines()[1:]  # the job's console, as followed
    assert printed[0].startswith(f"run demo at {root}: 2 stage(s) to run (read, clean), 0 done; Ray's logs: {root}/logs/run-")
    assert not [line for line in printed if "INFO" in line or "WARNING" in line or "pid=" in line], out  # in the log
    assert {n: s["state"] for n, s in read_manifest(str(root))["stages"].items()} == {"read": "done", "clean": "done"}

    assert main(["logs", "--address", head.dashboard_url, job]) == 0
    assert "[1/2] read: running" in capsys.readouterr().out
    assert main(["submit", "--address", f"http://127.0.0.1:{free_port()}", *args]) == 2
    assert "cannot reach a Ray cluster" in capsys.readouterr().err


def test_head_token_auth_follows_rays_rule(tmp_path):
    from cluster.local import head_uses_token_auth

    token = tmp_path / "auth_token"
    assert head_uses_token_auth({"RAY_AUTH_MODE": "token"}) is True
    assert head_uses_token_auth({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"}) is False
    assert head_uses_token_auth({"RAY_AUTH_TOKEN_PATH": str(token)}) is False  # no token there yet
    token.write_text("0" * 32)
    assert head_uses_token_auth({"RAY_AUTH_TOKEN_PATH": str(token)}) is True
    assert head_uses_token_auth({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none"), "RAY_AUTH_TOKEN": "x"}) is True
