"""What a new user meets first: relative paths, install-independent identities, the CLI's one-line errors
(no tracebacks), help, interrupts and a root whose first run failed. Each was a defect a fresh clone showed."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import pytest

from pipelines import dag, storage
from pipelines.cli import main
from pipelines.dag import Interrupted, Pipeline, PipelineError, Stage, read_manifest
from pipelines.presets import load_run_config
from pipelines.stages import read

CLI = [sys.executable, "-m", "pipelines.cli"]


# --- storage: listings in the form they were given ------------------------------------------------
@pytest.fixture
def tree(tmp_path, monkeypatch):
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    for name in ("corpus/a.txt", "corpus/sub/b.txt", "c.txt"):
        (tmp_path / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_listings_keep_the_form_they_were_given(tree):
    assert storage.list_files("corpus") == ["corpus/a.txt", "corpus/sub/b.txt"]
    assert storage.list_files("./corpus/") == ["./corpus/a.txt", "./corpus/sub/b.txt"]
    assert storage.list_files(f"file://{tree}/corpus") == [f"file://{tree}/corpus/a.txt", f"file://{tree}/corpus/sub/b.txt"]
    assert storage.list_files(str(tree / "corpus")) == [f"{tree}/corpus/a.txt", f"{tree}/corpus/sub/b.txt"]
    assert storage.expand("corpus/*.txt") == ["corpus/a.txt", "corpus/sub/b.txt"]
    assert storage.expand("*.txt") == ["c.txt", "corpus/a.txt", "corpus/sub/b.txt"]
    assert storage.expand("c.txt") == ["c.txt"]


def test_demo_uris_are_opened_where_the_package_is_and_listed_by_name():
    files = storage.expand("demo:corpus")
    assert files and all(f.startswith("demo:corpus/") for f in files)
    assert storage.expand("demo:corpus/*.txt.gz") == [f for f in files if f.endswith(".txt.gz")]
    installed = os.path.join(storage.DEMO_DIR, files[0][len("demo:"):])
    assert storage.read_bytes(files[0]) == open(installed, "rb").read()
    assert storage.resolve_path("demo:task") == os.path.join(storage.DEMO_DIR, "task")
    assert storage.absolute("demo:task") == "demo:task"


# --- configs: relative paths made absolute where the command was typed -----------------------------
def test_relative_paths_become_absolute_where_the_config_is_built(tree):
    cfg = load_run_config("demo", ["root=runs/x", "data.inputs=[corpus/*.txt, demo:corpus]",
                                   "finetune.glue_root=glue", "finetune.conll_root=conll",
                                   "finetune.commonsenseqa_root=csqa"])
    assert cfg.root == f"{tree}/runs/x"
    assert cfg.data.inputs == (f"{tree}/corpus/*.txt", "demo:corpus")
    assert (cfg.finetune.glue_root, cfg.finetune.conll_root, cfg.finetune.commonsenseqa_root) == (
        f"{tree}/glue", f"{tree}/conll", f"{tree}/csqa")
    assert cfg.finetune.tasks[0].data_uri == "demo:task"
    assert load_run_config("demo").root == f"{tree}/runs/demo"
    assert load_run_config("demo", ["root=s3://bucket/run"]).root == "s3://bucket/run"


def test_read_identity_and_rows_do_not_depend_on_the_install_folder(tmp_path, monkeypatch):
    """The same demo: corpus installed in two places gives the same read key and the same doc_ids."""
    name = "demo:corpus/python-000.txt.gz"
    here_identity = read.input_identity([name])
    here_ids = next(read.read_file(name, read.ReadConfig())).column("doc_id").to_pylist()
    elsewhere = tmp_path / "site-packages" / "pipelines" / "demo"
    shutil.copytree(storage.DEMO_DIR, elsewhere)
    monkeypatch.setattr(storage, "DEMO_DIR", str(elsewhere))
    assert read.input_identity([name]) == here_identity
    assert next(read.read_file(name, read.ReadConfig())).column("doc_id").to_pylist() == here_ids
    assert here_ids[0] == f"{name}#000000000000"
    data = storage.read_bytes(name)
    assert here_identity == [[name, len(data), __import__("hashlib").sha256(data).hexdigest()]]


# --- the DAG: a root where nothing finished; interrupts ----------------------------------------------
def _pipeline(calls: list[str], interrupt: BaseException | None = None) -> Pipeline:
    def make(ctx):
        calls.append(ctx.config)
        if interrupt is not None:
            raise interrupt
        uri = storage.join(ctx.root, "make", ctx.stage_hash, "out.txt")
        storage.write_bytes_atomic(uri, ctx.config.encode())
        return {"output": uri}

    def fail(ctx):
        raise ValueError("the corpus is empty")

    return Pipeline([Stage("make", make, config=lambda c: c,
                           resume_point=lambda root: "phase 0 step 150" if interrupt else None),
                     Stage("check", fail, after=("make",))])


def test_a_root_where_nothing_finished_takes_a_corrected_config(tmp_path):
    root = str(tmp_path / "run")
    calls: list[str] = []
    failing = Pipeline([Stage("make", lambda ctx: (_ for _ in ()).throw(ValueError("empty corpus")),
                              config=lambda c: c)])
    with pytest.raises(dag.StageFailed):
        failing.run("bad config", root, log=lambda _: None)
    (tmp_path / "run" / "read").mkdir()  # a stage's folder left empty by the failed run
    assert _pipeline(calls).run("good config", root, until="make", log=lambda _: None).ran == ["make"]
    assert read_manifest(root)["config"] == "good config"
    with pytest.raises(PipelineError, match="created by a different config"):  # now something is done
        _pipeline(calls).run("third config", root, until="make", log=lambda _: None)


@pytest.mark.parametrize("signal_exc", [KeyboardInterrupt(), SystemExit(15)])
def test_an_interrupted_stage_is_recorded_and_says_where_the_next_run_resumes(tmp_path, signal_exc):
    root = str(tmp_path / "run")
    lines: list[str] = []
    with pytest.raises(Interrupted, match="in stage make; run the same command again to resume from phase 0 step 150"):
        _pipeline([], signal_exc).run("cfg", root, log=lines.append)
    rec = read_manifest(root)["stages"]["make"]
    assert rec["state"] == "interrupted" and rec["error"].startswith("interrupted")
    assert lines[-1].startswith("[1/2] make: interrupted after ")
    lines.clear()
    with pytest.raises(Interrupted):
        _pipeline([], signal_exc).run("cfg", root, log=lines.append)
    assert "make: resuming from phase 0 step 150" in lines
    assert lines[0] == "[1/2] make (attempt 2, resuming from phase 0 step 150): running"


def test_cli_reports_an_interrupt_in_one_line_and_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise Interrupted("in stage pretrain; run the same command again to resume from phase 0 step 50")

    monkeypatch.setitem(__import__("pipelines.cli").cli.COMMANDS, "status", interrupted)
    assert main(["status", "anything"]) == 130
    assert capsys.readouterr().err == ("bert-pipeline status: interrupted in stage pretrain; run the same command "
                                       "again to resume from phase 0 step 50\n")


# --- the CLI's errors and help -------------------------------------------------------------------
def _manifest(root) -> None:
    storage.write_json_atomic(storage.join(str(root), "manifest.json"), {
        "version": 1, "config_hash": "abc", "config": {}, "created": 0.0,
        "stages": {n: {"state": "done", "seconds": 1.0, "outputs": {"output": f"{root}/{n}/k"}}
                   for n in ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs", "pretrain")}})


def test_status_piped_into_head_ends_quietly(tmp_path):
    _manifest(tmp_path / "run")
    out = subprocess.run(f"{' '.join(CLI)} status {tmp_path / 'run'} | head -1", shell=True, capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.stdout.startswith(f"run at {tmp_path / 'run'} (config abc)")
    assert out.stderr == ""


def test_status_of_a_folder_named_like_a_preset_reads_the_folder(tmp_path, monkeypatch, capsys):
    _manifest(tmp_path / "demo")
    monkeypatch.chdir(tmp_path)
    assert main(["status", "demo"]) == 0
    assert capsys.readouterr().out.startswith(f"run at {tmp_path}/demo (config abc)")
    assert main(["status", "runs/none"]) == 2
    assert capsys.readouterr().err == f"bert-pipeline status: error: {tmp_path}/runs/none holds no run (no manifest.json)\n"


def test_submit_refuses_a_local_root_a_remote_cluster_cannot_see(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "demo", "root=runs/sub", "--address", "http://10.1.2.3:8265"]) == 2
    assert capsys.readouterr().err == (
        f"bert-pipeline submit: error: run root {tmp_path}/runs/sub is a path on this machine, which the cluster at "
        "http://10.1.2.3:8265 cannot see; give root=s3://BUCKET/PREFIX (or submit to a cluster on this machine)\n")


def test_no_job_server_gives_a_hint(capsys):
    from cluster.local import free_port

    assert main(["logs", "raysubmit_x", "--address", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach a Ray cluster at http://127.0.0.1:" in err and "python -m cluster.local" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_finetune_of_a_missing_checkpoint_folder_says_so(tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "no" / "such"), "demo"]) == 2
    assert capsys.readouterr().err == f"bert-pipeline finetune: error: checkpoint {tmp_path}/no/such: no such folder\n"


def test_help_names_the_demo_the_presets_and_the_stages():
    top = subprocess.run(CLI + ["--help"], capture_output=True, text=True).stdout
    assert "A bare `bert-pipeline` runs the embedded demo" in top and "./runs/demo" in top.replace("\n", " ")
    run = subprocess.run(CLI + ["run", "--help"], capture_output=True, text=True).stdout
    assert "presets: demo, base, base-mlm, large" in run
    for stage in ("read", "clean", "near_dedup", "split", "wordpiece", "tokenize", "nsp_pairs", "mlm_packs", "pretrain",
                  "finetune", "report"):
        assert f"\n  {stage} " in run
    for command in ("logs", "stop"):
        text = subprocess.run(CLI + [command, "--help"], capture_output=True, text=True).stdout
        assert "the job id `submit` printed" in text and "Ray dashboard URL" in text


def test_a_corpus_of_binary_files_says_it_is_not_text():
    from pipelines.stages.clean import CleanConfig, all_dropped_message

    message = all_dropped_message({"binary": 39, "too_short": 2, "too_long": 0, "duplicate": 0}, CleanConfig())
    assert message == ("clean: every document was dropped (binary 39, too_short 2); most documents are not text "
                       "(invalid UTF-8, control bytes or markup): check that data.inputs names text files "
                       "(.txt, .jsonl, .parquet, optionally compressed)")
    assert "lower it" in all_dropped_message({"binary": 1, "too_short": 5}, CleanConfig())


def test_random_bytes_are_dropped_as_binary(tmp_path):
    """The message above is chosen by the real core's counts on a file of random bytes."""
    import random

    import pyarrow as pa

    from pipelines.stages import clean

    rng = random.Random(0)
    text = "\n\n".join(bytes(rng.randrange(256) for _ in range(600)).decode("utf-8", "replace") for _ in range(20))
    path = tmp_path / "random.txt.gz"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    docs = pa.concat_tables(read.read_file(str(path), read.ReadConfig()))
    work = clean.core(docs, clean.CleanConfig())
    reasons = work.column("drop_reason").to_pylist()
    assert reasons.count("binary") == docs.num_rows


# --- Ctrl-C during pretraining, for real ---------------------------------------------------------------
def _checkpoint_steps(root: str) -> list[int]:
    """The steps of the checkpoints Ray Train has committed (its snapshot lists them): what a re-run restores."""
    if not storage.is_dir(storage.join(root, "pretrain")):
        return []
    steps = []
    for f in storage.list_files(storage.join(root, "pretrain")):
        if f.endswith("/checkpoint_manager_snapshot.json"):
            try:
                steps += [r["metrics"]["step"] for r in storage.read_json(f).get("checkpoint_results", [])]
            except (OSError, ValueError):
                continue
    return sorted(steps)


@pytest.mark.slow
def test_ctrl_c_in_pretraining_says_where_the_next_run_resumes_and_it_does(tmp_path, small_corpus):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) once a checkpoint is committed:
    exit 130 and one line naming the step the next run resumes from; the next run says it resumed there."""
    import signal
    import time

    config = tmp_path / "small.yaml"
    config.write_text(f"""
preset: demo
root: runs/small
data:
  inputs: ["{small_corpus}"]
  near_dedup: {{enabled: false}}
  wordpiece: {{vocab_size: 1000}}
  nsp_pairs: {{dupe_factor: 1}}
pretrain:
  checkpoint_every: 10
  metrics_every: 5
  heldout: {{files: 0}}
  phases:
    - {{max_seq_length: 64, global_batch_size: 16, micro_batch_size: 8, num_steps: 400, warmup_steps: 4,
       learning_rate: 0.001, max_predictions_per_seq: 10}}
""")
    cmd = CLI + ["run", str(config), "--until", "pretrain"]
    root = str(tmp_path / "runs" / "small")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while not _checkpoint_steps(root):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no pretraining checkpoint in time"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (out[-2000:], err[-3000:])
    resumes = _checkpoint_steps(root)[-1]
    last = err.strip().splitlines()[-1]
    assert last == (f"bert-pipeline run: interrupted in stage pretrain; run the same command again to resume from "
                    f"phase 0 step {resumes}"), err[-3000:]
    assert "Traceback" not in err and "SystemExit" not in out + err, err[-4000:]
    assert "pretrain: interrupted after " in out
    assert read_manifest(root)["stages"]["pretrain"]["state"] == "interrupted"

    again = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.time() + 600
        text = ""
        while "pretrain: resuming from" not in text:
            line = again.stdout.readline()
            assert line or again.poll() is None, "the re-run ended without saying where it resumed"
            assert time.time() < deadline
            text += line
    finally:
        os.killpg(again.pid, signal.SIGKILL)
        again.wait()
    assert f"[9/9] pretrain (attempt 2, resuming from phase 0 step {resumes}): running\n" in text
    assert f"\npretrain: resuming from phase 0 step {resumes}\n" in text
