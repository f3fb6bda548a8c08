"""The console a person follows: one live line per stage (progress, rate, ETA), then its result line.
Ray's own logs and warnings go to a log file instead (``logs_to_file``), named in the run's first line.

    from pipelines import console
    console.progress("tokenize", 3, 8, "shards")         # the stage's live line: 3/8 shards (38%), rate, ETA
    console.result("tokenize", "1.2M tokens, 8 shards")  # its result: a line that stays
    console.info("anything else that should stay")

On a terminal the live line is redrawn in place. Elsewhere (a file, a pipe, a Ray job's logs, a test)
a stage's progress is printed after a minute, then at doubling gaps up to ten minutes
(``PLAIN_PROGRESS_EVERY_S``, ``PLAIN_PROGRESS_MAX_S``), so a log stays short.

A stage the DAG runs is ``begin``-ed and ``end``-ed by the DAG: a ``result`` given while it runs is
kept and printed on the DAG's one line for that stage (``[4/9] tokenize: done in 14.2s, 1.2M tokens``).
Code running in other processes (Ray Train's controller, fine-tuning tasks) reports through a
``Relay`` made on the driver: a picklable handle whose ``progress``/``result`` reach this console.
The functions are thread-safe; called in a Ray worker they print to that worker's log.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Iterator

PLAIN_PROGRESS_EVERY_S = float(os.environ.get("BERT_PIPELINE_PROGRESS_EVERY_S", "60"))
"""Off a terminal, a stage's first progress line comes after it has run this long; the gap then doubles
after each line, up to ``PLAIN_PROGRESS_MAX_S``: a short stage reports often, an hour-long one does not
flood a job's logs."""
PLAIN_PROGRESS_MAX_S = 600.0
REDRAW_EVERY_S = 0.2


@dataclass
class _Entry:
    """One live stage (or sub-task, e.g. ``finetune rte``)."""

    label: str
    started: float = field(default_factory=lambda: time.monotonic())
    done: int | None = None
    total: int | None = None
    unit: str = ""
    note: str = ""
    first: tuple[float, int] | None = None  # (time, done) of the first progress call: the rate's origin
    printed: float = field(default_factory=lambda: time.monotonic())  # last plain progress line
    gap: float | None = None  # seconds until the next plain progress line (None: PLAIN_PROGRESS_EVERY_S)
    results: list[str] = field(default_factory=list)

    def update(self, done: int, total: int | None, unit: str, note: str) -> None:
        if self.first is None or total != self.total or (self.done is not None and done < self.done):
            self.first = (time.monotonic(), done)  # a new phase of work: a new rate
        self.done, self.total, self.unit, self.note = done, total, unit, note

    def render(self) -> str:
        if self.done is None:
            return f"{self.label}: running"
        parts = [f"{self.done}/{self.total} {self.unit}".rstrip() if self.total else f"{self.done} {self.unit}".rstrip()]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        rate = self.rate()
        if rate:
            parts.append(f"{_number(rate)} {self.unit or 'items'}/s")
            if self.total and self.done < self.total:
                parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if self.note:
            parts.append(self.note)
        return f"{self.label}: {', '.join(parts)}"

    def rate(self) -> float | None:
        if self.first is None or self.done is None:
            return None
        seconds = time.monotonic() - self.first[0]
        return (self.done - self.first[1]) / seconds if seconds > 0.5 and self.done > self.first[1] else None


def _number(x: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:.1f}" if abs(x) < 10 else f"{x:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Console:
    """Where the lines go: ``stream`` (default: ``sys.stdout`` at the time of writing)."""

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._live_shown = ""
        self._last_draw = 0.0

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stdout

    def _live(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    # --- what callers use ----------------------------------------------------------------------
    def begin(self, stage: str, label: str) -> None:
        with self._lock:
            self._entries[stage] = _Entry(label)
            if self._live():
                self._draw(force=True)
            else:
                self._write_line(f"{label}: running")

    def progress(self, stage: str, done: int, total: int | None = None, unit: str = "", note: str = "") -> None:
        with self._lock:
            entry = self._entries.get(stage)
            if entry is None:
                entry = self._entries[stage] = _Entry(stage)
            entry.update(int(done), None if total is None else int(total), unit, note)
            if self._live():
                self._draw()
            elif time.monotonic() - entry.printed >= (entry.gap or PLAIN_PROGRESS_EVERY_S):
                entry.printed = time.monotonic()
                entry.gap = min(2 * (entry.gap or PLAIN_PROGRESS_EVERY_S), PLAIN_PROGRESS_MAX_S)
                self._write_line(entry.render())

    def result(self, stage: str, line: str) -> None:
        """Inside a DAG stage of that name: kept for the stage's end line; otherwise printed as ``stage: line``."""
        with self._lock:
            entry = self._entries.get(stage)
            if entry is not None and entry.label != stage:  # begun by the DAG
                entry.results.append(line)
                entry.done = None  # the work is finished: show the stage's name, not stale progress
                self._draw(force=True) if self._live() else None
                return
            self._entries.pop(stage, None)
            self._write_line(f"{stage}: {line}")

    def note(self, stage: str, line: str) -> None:
        """A line that stays, printed now as ``stage: line`` (e.g. a fine-tuning task's finished epoch),
        whether or not the stage has a live line."""
        with self._lock:
            self._write_line(f"{stage}: {line}")

    def end(self, stage: str, line: str) -> None:
        """The DAG's line for a finished (or failed) stage, with the results the stage gave."""
        with self._lock:
            entry = self._entries.pop(stage, None)
            results = entry.results if entry else []
            self._write_line(", ".join([line] + results))

    def info(self, line: str = "") -> None:
        with self._lock:
            for text in line.split("\n") if line else [""]:
                self._write_line(text)

    # --- drawing ---------------------------------------------------------------------------------
    def _write_line(self, text: str) -> None:
        out = self.stream
        if self._live():
            out.write("\r\x1b[K" + text + "\n")
            self._live_shown = ""
            self._draw(force=True)
        else:
            out.write(text + "\n")
        out.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW_EVERY_S:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = " | ".join(e.render() for e in self._entries.values())[:width]
        if text != self._live_shown:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._live_shown = text

    def clear(self) -> None:
        """Forget every live entry (a run that ended, however it ended)."""
        with self._lock:
            self._entries.clear()
            if self._live() and self._live_shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self._live_shown = ""

    @contextlib.contextmanager
    def writing_to(self, stream: IO[str]) -> Iterator[None]:
        old, self._stream = self._stream, stream
        try:
            yield
        finally:
            self._stream = old


_CONSOLE = Console()
_RELAY: "Relay | None" = None  # set in a worker process by ``reporting_to``


def progress(stage: str, done: int, total: int | None = None, unit: str = "", note: str = "") -> None:
    """The live line of ``stage``: ``done`` of ``total`` (None: unknown) ``unit``s, its rate and ETA, ``note``."""
    (_RELAY or _CONSOLE).progress(stage, done, total, unit, note)


def result(stage: str, line: str) -> None:
    """What ``stage`` produced, in a few words (``"1.2M tokens, 8 shards"``)."""
    (_RELAY or _CONSOLE).result(stage, line)


def note(stage: str, line: str) -> None:
    """A line about ``stage`` that stays, printed as it happens (``"epoch 1/3 done: ..."``)."""
    (_RELAY or _CONSOLE).note(stage, line)


@contextlib.contextmanager
def reporting_to(relay: "Relay | None") -> Iterator[None]:
    """In a Ray worker: ``progress`` and ``result`` go to the driver's console through ``relay`` (None: stay here)."""
    global _RELAY
    old, _RELAY = _RELAY, relay or _RELAY
    try:
        yield
    finally:
        _RELAY = old


def begin(stage: str, label: str) -> None:
    """The DAG starts ``stage``; ``label`` (e.g. ``[4/9] tokenize``) heads its live and end lines."""
    _CONSOLE.begin(stage, label)


def end(stage: str, line: str) -> None:
    """The DAG's one line for a finished stage; results the stage gave are appended to it."""
    _CONSOLE.end(stage, line)


def info(line: str = "") -> None:
    """A line that stays (may hold newlines)."""
    _CONSOLE.info(line)


def clear() -> None:
    _CONSOLE.clear()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal colour and cursor codes (Ray colours its task errors)."""
    return _ANSI.sub("", text)


def current() -> Console:
    return _CONSOLE


# --- Ray's logs to a file --------------------------------------------------------------------------
@contextlib.contextmanager
def logs_to_file(path: str) -> Iterator[None]:
    """Everything else this process writes (its own and its Ray workers' forwarded output, Ray's
    warnings, C++ logs on fd 2) goes to ``path`` while the console keeps writing where stdout was.
    Done on the file descriptors 1 and 2, because Ray's log handlers and its C++ core hold them, not
    ``sys.stdout``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.environ["RAY_COLOR_PREFIX"] = "0"  # Ray's prefixes of forwarded worker lines, without colour codes
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console_stream = _console_stream(saved[0])
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        with _CONSOLE.writing_to(console_stream):
            yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (log_fd, *saved):
            os.close(fd)
        if console_stream is not sys.stdout:
            with contextlib.suppress(Exception):
                console_stream.flush()


def _console_stream(saved_stdout_fd: int) -> IO[str]:
    """Where the console writes while fds 1 and 2 go to the log: a copy of the old fd 1 when
    ``sys.stdout`` writes to fd 1, else ``sys.stdout`` itself (e.g. a test's capture)."""
    try:
        if sys.stdout.fileno() == 1:
            return _DupStream(saved_stdout_fd, sys.stdout.isatty())
    except (AttributeError, ValueError, io.UnsupportedOperation):
        pass
    return sys.stdout


class _DupStream(io.TextIOBase):
    def __init__(self, fd: int, tty: bool):
        self._fd, self._tty = fd, tty

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(self._fd, data):]
        return len(text)

    def isatty(self) -> bool:
        return self._tty


# --- other processes -------------------------------------------------------------------------------
class _Inbox:
    """A Ray actor holding the messages of a Relay until the driver takes them."""

    def __init__(self):
        self.items: list[tuple] = []

    def put(self, item: tuple) -> None:
        self.items.append(item)

    def take(self) -> list[tuple]:
        items, self.items = self.items, []
        return items


class Relay:
    """Progress from Ray workers to the driver's console. Made on the driver (``with console.Relay()
    as relay:``), passed to remote code, which calls ``relay.progress(...)`` / ``relay.result(...)``;
    a driver thread applies them every ``every_s`` seconds. Messages are fire-and-forget: a worker
    never waits on the console."""

    def __init__(self, every_s: float = 0.5):
        import ray

        self._inbox = ray.remote(num_cpus=0, max_restarts=0)(_Inbox).remote()
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self):
        return {"_inbox": self._inbox}

    def __setstate__(self, state):
        self._inbox, self._thread, self._stop = state["_inbox"], None, threading.Event()

    def progress(self, stage: str, done: int, total: int | None = None, unit: str = "", note: str = "") -> None:
        self._inbox.put.remote(("progress", stage, done, total, unit, note))

    def result(self, stage: str, line: str) -> None:
        self._inbox.put.remote(("result", stage, line))

    def note(self, stage: str, line: str) -> None:
        """Waits until the line is held (a few ms): a line that stays must reach the driver even when the
        task ends right after it."""
        import ray

        with contextlib.suppress(Exception):
            ray.get(self._inbox.put.remote(("note", stage, line)), timeout=30)

    def __enter__(self) -> "Relay":
        self._thread = threading.Thread(target=self._pump, name="console-relay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._apply()  # what arrived last
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self._inbox)

    def _pump(self) -> None:
        while not self._stop.wait(self._every_s):
            self._apply()

    def _apply(self) -> None:
        import ray

        try:
            items = ray.get(self._inbox.take.remote(), timeout=30)
        except Exception:  # the console is best effort: never fail a run over it
            return
        for kind, *args in items:
            {"progress": _CONSOLE.progress, "result": _CONSOLE.result, "note": _CONSOLE.note}[kind](*args)
