"""Credentials never travel: the DAG up to pretraining (``run_until(cfg, "pretrain")``: the data
stages and one tiny pretraining phase) runs on moto with a unique secret in the driver's environment,
then the secret is searched for (as bytes) in the Ray session directory, every object in the bucket,
what ``ray list tasks/actors/jobs/workers/placement-groups --detail`` lists (the same state API, called
in-process) and the GCS key-value store. It must be nowhere. The run needs a Ray of its own started
with that secret and a dashboard (the state API), so it runs in a subprocess: this file is also its
script (``python test_secrets.py CHILD ...``).

The same run is the data stages' S3 test: raw text read from ``s3://``, every stage committed under
the ``s3://`` run root beside its manifest, the vocabulary taken from ``s3://``, a re-run a no-op.
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
        docs = f.read().split("\n\n")[:300]
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
    assert list(out["outputs"]) == ["read", "clean", "near_dedup", "split", "wordpiece", "tokenize", "nsp_pairs", "mlm_packs",
                                    "pretrain"]
    assert out["export"].startswith(s3_bucket + "/")
    assert out["rerun"] == out["outputs"]  # complete: nothing redone
    _check_data_on_s3(s3, bucket, s3_bucket, out["outputs"])

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


def _check_data_on_s3(s3, bucket: str, s3_bucket: str, outputs: dict[str, dict[str, str]]) -> None:
    import numpy as np

    from pipelines import stage_store, storage
    from pipelines.pretrain.dynamic_masking import MaskInstances, VocabInfo
    from pipelines.stages.wordpiece import load_tokenizer
    from tests.pipelines.test_preprocess import STAGES, data_outputs

    root = f"{s3_bucket}/work"
    uris = data_outputs({s: outputs[s] for s in STAGES})
    assert all(u.startswith(root + "/") and stage_store.is_complete(u) for u in uris.values())
    assert stage_store.read_table(uris["read"]).column("doc_id")[0].as_py() == f"{s3_bucket}/corpus/part-0.txt.gz#000000000000"
    nsp = stage_store.read_table(uris["nsp_pairs"])
    assert nsp.num_rows == stage_store.read_stats(uris["nsp_pairs"])["pairs"] > 300
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="work/")
            for o in page["Contents"]]
    assert not any("/_tmp-" in k for k in keys)
    assert {k.split("/")[1] for k in keys} - {""} == {*STAGES, "pretrain", "manifest.json"}  # "work/": a directory marker

    tok = load_tokenizer(uris["wordpiece"])
    rows = nsp.slice(0, 8).to_pydict()  # masked as the trainer's masking stage does
    batch = MaskInstances(VocabInfo.from_tokenizer(tok), seed=12345, max_seq_length=128, epoch=0)(
        {k: np.asarray(v, dtype=object) if k in ("input_ids", "token_type_ids") else np.asarray(v) for k, v in rows.items()})
    assert batch["input_ids"].shape == (8, 128)
    assert storage.exists(storage.join(uris["nsp_pairs"], "manifest.json"))


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

    from ray.util import state as ray_state

    from pipelines.presets import build_run_config
    from pipelines.bert_dag import run_until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # As cli.init_ray starts a local Ray (its runtime_env holds no credential), plus the dashboard.
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, _temp_dir=ray_dir,
             log_to_driver=False, runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false",
                                                            "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}})
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = build_run_config({
        "root": f"{bucket}/work",
        "data": {"inputs": [f"{bucket}/corpus/*.txt.gz"], "wordpiece": {"vocab_file": f"{bucket}/vocab/vocab.txt"}},
        "pretrain": {"model_preset": "tiny", "num_workers": 1, "seed": 1, "checkpoint_every": 2, "metrics_every": 1,
                     "phases": [{"max_seq_length": 128, "global_batch_size": 8, "micro_batch_size": 8, "num_steps": 2,
                                 "warmup_steps": 1, "learning_rate": 1e-3, "max_predictions_per_seq": 20}]}})
    outputs = run_until(cfg, "pretrain")
    rerun = run_until(cfg, "pretrain")

    raylet = [p for p in psutil.process_iter(["name", "cmdline"])
              if "raylet" in (p.info["name"] or "") and ray_dir in " ".join(p.info["cmdline"] or [])]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    raylet_env = any(secret in open(f"/proc/{p.pid}/environ", "rb").read() for p in raylet)
    address = f"http://127.0.0.1:{port}"
    state = {}  # what `ray list WHAT --detail --address ADDRESS` shows, without a CLI process per listing
    for what in ("tasks", "actors", "jobs", "workers", "placement_groups"):
        listed = getattr(ray_state, f"list_{what}")(address=address, detail=True, limit=10000, timeout=120,
                                                    raise_on_missing_output=False)
        state[what] = json.dumps([x.asdict() for x in listed], default=str)
    kv, entries = _dump_kv()
    ray.shutdown()
    with open(report, "w") as f:
        json.dump({"outputs": outputs, "rerun": rerun, "export": outputs["pretrain"]["output"],
                   "raylet_env_has_secret": raylet_env, "state": state,
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
