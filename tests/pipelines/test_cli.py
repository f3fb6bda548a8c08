"""bert-pipeline on real stages: strict configs, early errors that leave finished work alone,
status, and a data-stage driver killed with SIGKILL that a re-run finishes without redoing work."""
from __future__ import annotations

import gzip
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from pipelines import storage
from pipelines.cli import main
from pipelines.dag import read_manifest
from pipelines.presets import PRESETS, load_run_config
from pipelines.run_config import RunConfig
from pipelines.typed_config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CORPUS = os.path.join(REPO, "pipelines", "demo", "corpus", "python-000.txt.gz")


def small_config(tmp_path, corpus: str) -> str:
    path = tmp_path / "small.yaml"
    path.write_text(f"""
preset: demo
name: small
root: {tmp_path / 'run'}
data:
  inputs: ["{corpus}"]
  wordpiece: {{vocab_size: 1000}}
ray: {{num_cpus: 2}}
""")
    return str(path)


# --- configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = load_run_config(name)
    assert isinstance(cfg, RunConfig) and cfg.name


def test_preset_large_inherits_base():
    base, large = load_run_config("base"), load_run_config("large")
    assert large.pretrain.model_preset == "large" and base.pretrain.model_preset == "base"
    assert large.finetune == base.finetune and large.pretrain.deepspeed.zero_stage == 2


@pytest.mark.parametrize("override, message", [
    ("data.clean.min_char=5", r"unknown config key\(s\) data\.clean\.min_char"),
    ("pretrain.num_workers=two", r"pretrain\.num_workers: expected an integer, got str"),
    ("pretrain.model_preset=huge", r"model_preset 'huge'"),
    ("ray.adress=x", r"unknown config key\(s\) ray\.adress"),
])
def test_bad_config_is_an_error_naming_the_key(override, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message):
        load_run_config("demo", [override])
    assert main(["run", "demo", override, f"root={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and override.split("=")[0].split(".")[-1] in err
    assert not (tmp_path / "run").exists()


def test_unknown_preset_or_missing_file(capsys):
    assert main(["run", "/nonexistent/conf.yaml"]) == 2
    assert "neither a preset" in capsys.readouterr().err


def test_missing_input_path_fails_before_any_work(tmp_path, capsys):
    assert main(["run", "demo", f"root={tmp_path / 'run'}", "data.inputs=[/nonexistent/corpus/*.txt]"]) == 2
    assert "/nonexistent/corpus/*.txt" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_status_of_a_missing_run(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


# --- real stages -------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_skip_refuse_and_status(tmp_path, small_corpus, ray_session, capsys):
    config = small_config(tmp_path, small_corpus)
    root = str(tmp_path / "run")
    assert main(["run", config, "--until", "clean"]) == 0
    manifest = read_manifest(root)
    assert sorted(n for n, s in manifest["stages"].items() if s["state"] == "done") == ["clean", "read"]
    before = {f: os.path.getmtime(f) for f in storage.list_files(root)}

    capsys.readouterr()
    assert main(["run", config, "--until", "clean"]) == 0
    assert "read: done already, skipped" in capsys.readouterr().out

    # a different config against the same run root: refused before any work, nothing touched
    assert main(["run", config, "data.clean.min_chars=50", "--until", "clean"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "data.clean.min_chars: 200 -> 50" in err
    assert {f: os.path.getmtime(f) for f in storage.list_files(root)} == before

    assert main(["status", root]) == 0
    out = capsys.readouterr().out
    assert "read" in out and "done" in out and "pending" in out


@pytest.mark.slow
def test_driver_killed_in_a_data_stage_resumes(tmp_path, small_corpus):
    """SIGKILL the driver while `split` runs; the re-run skips read/clean and finishes the rest."""
    config = small_config(tmp_path, small_corpus)
    root = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "pipelines.cli", "run", config, "--until", "wordpiece"]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            m = read_manifest(root) if os.path.exists(os.path.join(root, "manifest.json")) else None
            if m and m["stages"].get("split", {}).get("state") == "running":
                break
            assert proc.poll() is None, "driver ended before the split stage started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _kill_group(proc.pid)
    killed = read_manifest(root)
    assert killed["stages"]["split"]["state"] == "running"  # as the driver left it
    assert killed["stages"]["clean"]["state"] == "done"

    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "read: done already, skipped" in out.stdout and "clean: done already, skipped" in out.stdout
    final = read_manifest(root)
    assert {n: s["state"] for n, s in final["stages"].items()} == {
        "read": "done", "clean": "done", "near_dedup": "done", "split": "done", "wordpiece": "done"}
    assert final["stages"]["split"]["attempts"] == 2 and final["stages"]["clean"]["attempts"] == 1
    assert final["stages"]["clean"]["outputs"] == killed["stages"]["clean"]["outputs"]


def _kill_group(pgid: int) -> None:
    """The killed driver's own local Ray (same process group) goes too; nothing else is touched."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_whole_run_on_s3_with_driver_killed_during_pretraining(tmp_path, small_corpus, s3_bucket):
    """Every stage output, checkpoint and report on S3 (moto on 127.0.0.1). The driver is SIGKILLed
    once Ray Train has committed a pretraining checkpoint; the re-run skips the data stages, continues training
    from that checkpoint (its first checkpoint is a later step) and finishes the run.

    The run is cased from the vocabulary on and has two phases, 64 then 128: phase 2 reads the seq-128
    instances (its sequences average more than 64 real tokens, per the trainer's own metrics), and the
    export's tokenizer, transformers' and fine-tuning's, keep the case."""
    root = f"{s3_bucket}/runs/small"
    config = tmp_path / "s3.yaml"
    config.write_text(f"""
preset: demo
name: s3-small
root: {root}
data:
  inputs: ["{small_corpus}"]
  wordpiece: {{vocab_size: 1000, lowercase: false}}
  tokenize: {{lowercase: false}}
  nsp_pairs: {{dupe_factor: 1}}
pretrain:
  checkpoint_every: 10
  metrics_every: 5
  phases:
    - {{max_seq_length: 64, global_batch_size: 16, micro_batch_size: 8, num_steps: 30, warmup_steps: 4,
       learning_rate: 0.001, max_predictions_per_seq: 10}}
    - {{max_seq_length: 128, global_batch_size: 16, micro_batch_size: 8, num_steps: 5, warmup_steps: 1,
       learning_rate: 0.001, max_predictions_per_seq: 20}}
finetune:
  tasks:
    - name: movie_sentiment
      data_uri: "demo:task"
      spec: {{name: movie_sentiment, text_a: sentence, labels: ["0", "1"], metrics: [accuracy], test_files: []}}
      hyper_params: {{learning_rate: 0.0001, batch_size: 32, num_epochs: 1, max_seq_length: 64,
                      max_train_examples: 128, max_eval_examples: 128}}
      num_cpus: 1
""")
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config)]
    env = dict(os.environ, PYTHONPATH=REPO)
    first_out = tmp_path / "first-run.out"
    with open(first_out, "w") as console_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=console_file, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.time() + 400
        while not _committed_steps(root):
            assert proc.poll() is None, "driver ended before pretraining wrote a checkpoint"
            assert time.time() < deadline, "no pretraining checkpoint in time"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _kill_group(proc.pid)
    killed_at = max(_committed_steps(root))
    killed = storage.read_json(f"{root}/manifest.json")
    assert killed["stages"]["pretrain"]["state"] == "running"

    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for stage in ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs"):
        assert f"{stage}: done already, skipped" in out.stdout
    ray_log = _assert_console(first_out.read_text(), out.stdout, root)
    # Checkpoints the re-run wrote (its log also names the one it restored from, step killed_at).
    reported = [int(s) for s in __import__("re").findall(r"successfully created at: Checkpoint\([^)]*phase0-step(\d+)\)",
                                                         out.stdout + out.stderr + ray_log)]
    if reported:  # worker logs reach the driver: training went on from the checkpoint, not from step 0
        lines = [l for l in (out.stdout + out.stderr + ray_log).splitlines() if f"phase0-step{killed_at:08d}" in l]
        assert min(reported) > killed_at, (killed_at, reported, lines[:6])
    final = storage.read_json(f"{root}/manifest.json")
    assert all(s["state"] == "done" for s in final["stages"].values()), final["stages"]
    assert final["stages"]["pretrain"]["attempts"] == 2
    report = final["stages"]["report"]["outputs"]
    assert report["plot"].startswith(root) and storage.read_bytes(report["plot"])[:8] == b"\x89PNG\r\n\x1a\n"
    table = storage.read_bytes(report["output"]).decode()
    assert "movie_sentiment" in table and "phase0" in table and "phase1" in table
    export = final["stages"]["pretrain"]["outputs"]["output"]
    phase1, phase2 = ([json.loads(line) for line in storage.read_bytes(
        f"{export.rsplit('/phase1/export', 1)[0]}/{p}/metrics.jsonl").decode().splitlines() if line.strip()]
        for p in ("phase0", "phase1"))
    steps = [m["step"] for m in phase1]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # the curve continues, no step twice
    assert [m["step"] for m in phase2] == [5]
    _assert_phases_and_case(final["stages"], export, phase1, phase2, tmp_path)


def _assert_phases_and_case(stages: dict, export: str, phase1: list[dict], phase2: list[dict], tmp_path) -> None:
    """One NSP output per phase length, each phase fed its own; one casing from the vocabulary to the export."""
    import transformers

    from pipelines import stage_store
    from pipelines.stages.wordpiece import load_tokenizer as load_vocabulary
    from pipelines.finetune.train import load_tokenizer, local_checkpoint

    nsp = stages["nsp_pairs"]["outputs"]
    assert sorted(nsp) == ["seq128", "seq64"]
    assert {k: v for k, v in stages["pretrain"]["inputs"].items() if k.startswith("nsp_pairs.")} == {
        "nsp_pairs.seq64": nsp["seq64"], "nsp_pairs.seq128": nsp["seq128"]}
    longest = {k: stage_store.read_stats(uri)["max_num_tokens"] for k, uri in nsp.items()}
    assert longest["seq64"] <= 64 < longest["seq128"] <= 128
    assert all(stage_store.read_stats(uri)["lowercase"] is False for uri in nsp.values())
    mean_length = [[m["tokens_per_s"] / m["samples_per_s"] for m in curve] for curve in (phase1, phase2)]
    assert max(mean_length[0]) <= 64 and min(mean_length[1]) > 64, mean_length

    vocab = load_vocabulary(stages["wordpiece"]["outputs"]["output"]).vocab()
    assert "The" in vocab and any(p[0].isupper() for p in vocab if p.isalpha())
    local = pathlib.Path(local_checkpoint(export, str(tmp_path / "export")))  # transformers reads a local folder
    assert json.loads((local / "tokenizer_config.json").read_text())["do_lower_case"] is False
    ours = load_tokenizer(str(local))
    assert ours.lowercase is False and ours.tokenize("The")[0] == "The"
    hf = transformers.AutoTokenizer.from_pretrained(str(local))
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as f:
        text = [line.strip() for line in f.read().split("\n\n")[400:440] if line.strip()]
    assert [hf(t)["input_ids"] for t in text] == [ours.encode(t) for t in text]


def _assert_console(killed: str, rerun: str, root: str) -> str:
    """What a person sees: the killed first run's lines up to pretraining, then the re-run's: one line
    per stage (no Ray output: that went to the log file the first line names), a line per fine-tuning
    task, and a summary with the results table and where everything is. Returns the re-run's Ray log."""
    first = killed.splitlines()
    log_name = r"Ray's logs: (/\S+) \(copied to (s3://\S+) at the end\)"
    assert re.fullmatch(rf"run s3-small at {root}: 11 stage\(s\) to run \(read, clean, near_dedup, split, wordpiece, "
                        rf"tokenize, nsp_pairs, mlm_packs, pretrain, finetune, report\), 0 done; {log_name}", first[0]), first[0]
    data_stages = ("read", "clean", "near_dedup", "split", "wordpiece", "tokenize", "nsp_pairs", "mlm_packs")
    expected = [line for i, s in enumerate(data_stages) for line in (f"[{i + 1}/11] {s}: running", f"[{i + 1}/11] {s}: done in")]
    assert [line[:len(e)] for line, e in zip(first[1:], expected)] == expected
    assert first[17] == "[9/11] pretrain: running" and len(first) < 24, first
    lines = rerun.splitlines()
    header = re.fullmatch(rf"run s3-small at {root}: 3 stage\(s\) to run \(pretrain, finetune, report\), 8 done; {log_name}",
                          lines[0])
    assert header, lines[0]
    # 61 lines here: the report's held-out table, a held-out line per phase, the resume line and the epochs
    # were added to what a person sees (issue 32); still a screen and a half
    assert len(lines) < 70, rerun
    assert not [line for line in lines if "pid=" in line or "INFO" in line or "WARNING" in line], rerun
    assert lines[1:9] == [f"[{i + 1}/11] {s}: done already, skipped" for i, s in enumerate(data_stages)]
    # the killed driver's attempt was the first; the re-run says where it resumes (a committed checkpoint)
    resumed = re.fullmatch(r"\[9/11\] pretrain \(attempt 2, resuming from phase 0 step (\d+)\): running", lines[9])
    assert resumed, lines[9]
    assert lines[10] == f"pretrain: resuming from phase 0 step {resumed.group(1)}"
    assert re.search(r"^\[9/11\] pretrain: done in [\d.]+s, phase 0 MLM loss [\d.]+ acc [\d.]+, phase 1 MLM loss [\d.]+ acc [\d.]+\n\[10/11\] finetune: running$",
                     rerun, re.M), rerun
    assert re.search(r"^finetune movie_sentiment: done, score [\d.]+ in \d+ s$", rerun, re.M), rerun
    assert re.search(r"^\[11/11\] report: done in [\d.]+s$", rerun, re.M), rerun
    manifest = storage.read_json(f"{root}/manifest.json")
    report = manifest["stages"]["report"]["outputs"]
    assert storage.read_bytes(report["output"]).decode().rstrip() in rerun
    assert f"loss curves: {report['plot']}" in lines and f"results table: {report['output']}" in lines
    assert lines[-2:] == [f"manifest: {root}/manifest.json (bert-pipeline status {root})",
                          f"Ray's logs: {header.group(2)}"]
    ray_log = storage.read_bytes(header.group(2)).decode("utf-8", "replace")
    assert "RayTrainWorker" in ray_log  # Ray's own output is kept, in the log
    return ray_log


def _committed_steps(root: str) -> list[int]:
    """Steps of the checkpoints Ray Train has committed (its snapshot lists them; a checkpoint whose
    files are written but not yet committed is lost with the driver, and the phase starts over)."""
    try:
        files = storage.list_files(f"{root}/pretrain")
    except (FileNotFoundError, OSError):
        return []
    steps = []
    for f in files:
        if f.endswith("/checkpoint_manager_snapshot.json"):
            try:
                snapshot = storage.read_json(f)
            except (FileNotFoundError, OSError, ValueError):
                continue
            steps += [r["metrics"]["step"] for r in snapshot.get("checkpoint_results", [])]
    return sorted(steps)


def test_unwritable_s3_root_fails_early(s3_server, capsys):
    assert main(["run", "demo", "root=s3://no-such-bucket-here/run"]) == 2
    assert "run root s3://no-such-bucket-here/run is not writable" in capsys.readouterr().err
