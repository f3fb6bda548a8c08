"""The console: a stage's live line (progress, rate, ETA), its one end line, and Ray's output kept
out of it by ``logs_to_file``."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from pipelines import console


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(console.time, "monotonic", c)
    return c


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_stream_prints_progress_at_doubling_gaps_and_one_end_line(clock, monkeypatch):
    monkeypatch.setattr(console, "PLAIN_PROGRESS_EVERY_S", 30.0)
    out = io.StringIO()
    c = console.Console(out)
    c.begin("tokenize", "[5/9] tokenize")
    c.progress("tokenize", 0, 8, "shards")
    clock.now += 10
    c.progress("tokenize", 2, 8, "shards")  # 10 s in: too soon for a line
    clock.now += 30
    c.progress("tokenize", 6, 8, "shards")
    clock.now += 40
    c.progress("tokenize", 7, 8, "shards")  # the gap doubled to 60 s: no line yet
    c.result("tokenize", "1.2M tokens")
    c.end("tokenize", "[5/9] tokenize: done in 81.0s")
    c.result("squad", "f1 88.5")  # not begun by the DAG: its own line
    assert out.getvalue().splitlines() == [
        "[5/9] tokenize: running",
        "[5/9] tokenize: 6/8 shards (75%), 0.1 shards/s, ETA 13s",
        "[5/9] tokenize: done in 81.0s, 1.2M tokens",
        "squad: f1 88.5",
    ]


def test_terminal_redraws_one_live_line_for_all_running_tasks(clock):
    out = Tty()
    c = console.Console(out)
    c.progress("finetune rte", 10, 100, "steps")
    clock.now += 2
    c.progress("finetune rte", 30, 100, "steps", note="loss 0.6931")
    clock.now += 1
    c.progress("finetune sst2", 5, None, "steps")
    c.result("finetune rte", "accuracy 0.6643")
    c.clear()
    text = out.getvalue()
    assert text.count("\n") == 1  # the live line is redrawn in place; only the result stays
    assert "\r\x1b[Kfinetune rte: 30/100 steps (30%), 10 steps/s, ETA 7s, loss 0.6931" in text
    assert "finetune rte: 30/100 steps (30%), 6.7 steps/s, ETA 10s, loss 0.6931 | finetune sst2: 5 steps" in text
    assert "\r\x1b[Kfinetune rte: accuracy 0.6643\n" in text


def test_logs_to_file_keeps_fd_output_out_of_the_console(tmp_path):
    """A child process: fds 1 and 2 (what Ray's handlers and C++ core write to) go to the log file."""
    log = tmp_path / "logs" / "run.log"
    code = f"""
import os, sys
from pipelines import console
with console.logs_to_file({str(log)!r}):
    console.info("first line")
    print("from python")
    os.write(2, b"from fd 2\\n")
    console.result("read", "3 files")
print("after")
"""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["first line", "read: 3 files", "after"] and out.stderr == ""
    assert log.read_text().splitlines() == ["from python", "from fd 2"]


def test_terminal_stage_lines_from_begin_to_end(clock):
    out = Tty()
    c = console.Console(out)
    c.begin("read", "[1/2] read")
    clock.now += 1
    c.progress("read", 1, 4, "files")
    c.result("read", "4 files, 1.2 MB")
    c.end("read", "[1/2] read: done in 3.0s")
    text = out.getvalue()
    assert text.startswith("\r\x1b[K[1/2] read: running\r\x1b[K[1/2] read: 1/4 files (25%)")
    assert text.endswith("\r\x1b[K[1/2] read: done in 3.0s, 4 files, 1.2 MB\n")  # the one line that stays
    assert text.count("\n") == 1


def test_a_whole_run_is_a_line_per_stage_and_a_short_summary(tmp_path, monkeypatch, capsys, ray_session):
    """`bert-pipeline run` through the BERT DAG's eleven stages (each a stand-in that writes one file, a
    fine-tuning task's result line included): off a terminal, two lines per stage, then the summary;
    the demo's whole console stays under 60 lines (the real stages add a few progress lines)."""
    from pipelines import bert_dag, cli, storage
    from pipelines.dag import Pipeline, Stage
    from pipelines.run_config import run_identity

    names = bert_dag.bert_pipeline().names()

    def stand_in(name):
        def run(ctx):
            if name == "finetune":
                console.result("finetune movie_sentiment", "done, score 75.0000 in 3 s")
            out = storage.join(ctx.root, name, "results.md")
            storage.write_bytes_atomic(out, b"| task | score |\n|---|---|\n| movie_sentiment | 75.0000 |\n")
            return {"output": out, "plot": out} if name == "report" else {"output": out}
        return run

    stages = [Stage(n, stand_in(n), tuple(names[i - 1:i])) for i, n in enumerate(names)]
    monkeypatch.setattr(bert_dag, "bert_pipeline", lambda: Pipeline(stages, identity=run_identity))
    root = tmp_path / "run"
    assert cli.main(["run", "demo", f"root={root}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"run demo at {root}: 11 stage(s) to run (read, clean, near_dedup, split, wordpiece, tokenize, "
                               f"nsp_pairs, mlm_packs, pretrain, finetune, report), 0 done; Ray's logs: {root}/logs/run-")
    expected = [f"[{i + 1}/11] {n}: {state}" for i, n in enumerate(names) for state in ("running", "done in")]
    expected.insert(19, "finetune movie_sentiment: done, score 75.0000 in 3 s")
    assert [line[:len(e)] for line, e in zip(lines[1:], expected)] == expected
    summary = lines[1 + len(expected):]
    assert summary[0] == "" and summary[1].startswith("finished in ")
    assert [line.split()[:2] for line in summary[3:14]] == [[n, "done"] for n in names]
    assert summary[14:19] == ["", "| task | score |", "|---|---|", "| movie_sentiment | 75.0000 |", ""]
    assert summary[19:21] == [f"results table: {root}/report/results.md", f"loss curves: {root}/report/results.md"]
    assert summary[21:] == [f"manifest: {root}/manifest.json (bert-pipeline status {root})",
                            f"Ray's logs: {lines[0].split('Ray' + chr(39) + 's logs: ')[1]}"]
    assert len(lines) == 47 < 60
