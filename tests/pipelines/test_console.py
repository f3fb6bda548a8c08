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
