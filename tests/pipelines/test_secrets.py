"""Credentials never travel: the S3 data chain and one pretraining phase run on moto with a unique
secret in the driver's environment, then the secret is searched for (as bytes) in the Ray session
directory, every object under the run root and ``ray list tasks/actors/jobs --detail``. It must be
nowhere. The run needs a Ray of its own started with that secret and a dashboard (the state API),
so it runs in a subprocess: this file is also its script (``python test_secrets.py CHILD ...``).
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import uuid

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

HERE = os.path.abspath(__file__)


def _grep(secret: bytes, root: str) -> list[str]:
    """Files under ``root`` that hold ``secret``; sockets and vanished files are skipped."""
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        if secret in f.read():
                            hits.append(path)
            except OSError:
                continue
    return hits


def test_secret_is_nowhere(s3_bucket, demo_files, minilm_dir, tmp_path):
    import boto3

    secret = f"sekrit-{uuid.uuid4().hex}"
    bucket = s3_bucket[len("s3://"):]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    with gzip.open(demo_files[0], "rt", encoding="utf-8") as f:
        docs = f.read().split("\n\n")[:200]
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"corpus/part-{i}.txt.gz", Body=gzip.compress("\n\n".join(docs[i::2]).encode()))
    with open(os.path.join(minilm_dir, "vocab.txt"), "rb") as f:
        s3.put_object(Bucket=bucket, Key="vocab/vocab.txt", Body=f.read())

    # A short temp dir: Ray's unix sockets live under it (107-byte path limit).
    ray_dir = tempfile.mkdtemp(prefix="rsec-", dir="/tmp")
    report = str(tmp_path / "report.json")
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": secret + "-token",
           "PYTHONPATH": os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.dirname(HERE))),
                                                     os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run([sys.executable, HERE, "CHILD", s3_bucket, ray_dir, report], env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with open(report) as f:
        out = json.load(f)

    # The search can find it: the driver had it, and so does the raylet's own environment (which is
    # where the workers take it from).
    assert secret in env["AWS_SECRET_ACCESS_KEY"]
    assert out["raylet_env_has_secret"], "the local Ray was not started with the driver's credentials"
    assert out["stages"] == ["read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs"]
    assert out["export"].startswith(s3_bucket + "/")

    needles = [secret.encode(), (secret + "-token").encode()]
    sessions = [os.path.join(ray_dir, d) for d in os.listdir(ray_dir)
                if d.startswith("session_") and not os.path.islink(os.path.join(ray_dir, d))]
    assert sessions and any(os.listdir(os.path.join(s, "logs")) for s in sessions)
    found = {n.decode(): [p for s in sessions for p in _grep(n, s)] for n in needles}
    assert found == {n.decode(): [] for n in needles}, f"secret in the Ray session directory: {found}"

    keys, leaked = 0, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            keys += 1
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            leaked += [obj["Key"] for n in needles if n in body]
    assert keys > 20 and not leaked, leaked  # manifests, stats, shards, checkpoints, metrics, export

    for name, text in out["state"].items():
        assert len(text) > 100, (name, text)
        assert not any(n.decode() in text for n in needles), f"secret in `ray list {name} --detail`"
    assert not any(n.decode() in out["kv"] for n in needles), "secret in the GCS key-value store"
    assert out["kv_entries"] > 10  # the function table (pickled tasks) and runtime envs were searched
    assert not any(n.decode() in proc.stdout + proc.stderr for n in needles), "secret in the driver's output"


def test_credentials_are_refused_where_they_would_travel(monkeypatch):
    from cluster.jobs import ClusterError, runtime_env
    from pipelines import storage

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.capture_env()["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert not set(storage.capture_env()) & set(storage.SECRET_ENV)
    with pytest.raises(ValueError, match=r"not \['AWS_SECRET_ACCESS_KEY'\]: credentials never travel"):
        storage.apply_env({"AWS_SECRET_ACCESS_KEY": "sekrit"})
    assert "sekrit" not in json.dumps(runtime_env())
    with pytest.raises(ClusterError, match="AWS_SESSION_TOKEN"):
        runtime_env({"AWS_SESSION_TOKEN": "sekrit"})
    import pickle

    fs, _ = storage.filesystem("s3://bucket/key")
    assert b"sekrit" not in pickle.dumps(fs)  # the default credential chain: nothing to pickle


# --- the child: its own Ray, the data chain and a pretraining phase on s3, then the state listings ---

def _child(bucket: str, ray_dir: str, report: str) -> None:
    import socket

    import psutil
    import ray

    from pipelines.preprocess import PreprocessConfig, run_preprocessing
    from pipelines.pretrain import PretrainConfig, run_pretraining
    from pipelines.stages.wordpiece import WordPieceConfig
    from pipelines.typed_config import from_dict

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # As cli.init_ray starts a local Ray (its runtime_env holds no credential), plus the dashboard.
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, _temp_dir=ray_dir,
             log_to_driver=False, runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false",
                                                            "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}})
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = PreprocessConfig(inputs=(f"{bucket}/corpus/*.txt.gz",),
                           wordpiece=WordPieceConfig(vocab_file=f"{bucket}/vocab/vocab.txt"))
    uris = run_preprocessing(cfg, f"{bucket}/work")
    pre = from_dict(PretrainConfig, {
        "model_preset": "tiny", "num_workers": 1, "seed": 1, "checkpoint_every": 2, "metrics_every": 1,
        "phases": [{"max_seq_length": 128, "global_batch_size": 8, "micro_batch_size": 8, "num_steps": 2,
                    "warmup_steps": 1, "learning_rate": 1e-3, "max_predictions_per_seq": 20}]})
    export = run_pretraining(pre, uris["nsp_pairs"], f"{uris['wordpiece']}/vocab.txt", f"{bucket}/work")

    raylet = [p for p in psutil.process_iter(["name", "cmdline"])
              if "raylet" in (p.info["name"] or "") and ray_dir in " ".join(p.info["cmdline"] or [])]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    raylet_env = any(secret in open(f"/proc/{p.pid}/environ", "rb").read() for p in raylet)
    address = f"http://127.0.0.1:{port}"
    state = {}
    for what in ("tasks", "actors", "jobs", "workers", "placement-groups"):
        cmd = ["ray", "list", what, "--detail", "--address", address, "--limit", "10000", "--format", "json"]
        listed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "RAY_ADDRESS": address})  # not another Ray on this box
        if listed.returncode:
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {listed.stderr[-800:]}")
        state[what] = listed.stdout
    kv, entries = _dump_kv()
    ray.shutdown()
    with open(report, "w") as f:
        json.dump({"stages": list(uris), "export": export, "raylet_env_has_secret": raylet_env, "state": state,
                   "kv": kv, "kv_entries": entries}, f)


def _dump_kv() -> tuple[str, int]:
    """Every key and value of the GCS key-value store, in the namespaces Ray uses (``fun`` holds the
    pickled remote functions and actor classes, with what they closed over)."""
    from ray._private.worker import global_worker

    gcs = global_worker.gcs_client
    parts, entries = [], 0
    for ns in (None, b"fun", b"session", b"cluster", b"dashboard", b"jobs", b"job", b"runtime_env", b"serve",
               b"train", b"data", b"usage_stats", b"autoscaler", b"healthcheck"):
        for key in gcs.internal_kv_keys(b"", ns):
            value = gcs.internal_kv_get(key, ns) or b""
            parts.append(repr(key) + repr(value))
            entries += 1
    return "\n".join(parts), entries


if __name__ == "__main__" and sys.argv[1:2] == ["CHILD"]:
    _child(*sys.argv[2:5])
