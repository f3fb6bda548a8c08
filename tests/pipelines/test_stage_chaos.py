"""Chaos in a data stage: while ``clean`` runs, a Ray worker process busy with one of its tasks is
killed by its pid (only workers of the Ray this test session started: children of its raylet).
Ray retries the task and the stage's output is byte for byte an undisturbed run's."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time

import psutil
import pytest

from pipelines import storage
from pipelines.stages.clean import CleanConfig, run_clean
from pipelines.stages.read import ReadConfig, run_read

pytestmark = pytest.mark.slow


def _digest(uri: str) -> dict[str, str]:
    return {os.path.relpath(f, uri): hashlib.sha256(storage.read_bytes(f)).hexdigest()
            for f in storage.list_files(uri) if not f.endswith("stats.json")}  # stats hold the seconds


def _busy_workers() -> list[psutil.Process]:
    """Workers of this session's raylet running a stage task (their title names the task)."""
    import ray

    raylet = psutil.Process(ray._private.worker._global_node.all_processes["raylet"][0].process.pid)
    busy = []
    for p in raylet.children(recursive=True):
        try:  # a worker may exit between the listing and the read of its title
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if any(t in title for t in ("ReadUnits", "MapBatches", "_PieceWriter", "Shuffle", "Aggregator", "finish_block")):
            busy.append(p)
    return busy


def test_worker_killed_mid_stage_gives_identical_bytes(ray_session, demo_files, tmp_path):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    read_uri = run_read(ReadConfig(), demo_files, str(tmp_path / "a"))
    reference = run_clean(CleanConfig(), read_uri, str(tmp_path / "a"))

    killed: list[int] = []

    def chaos() -> None:
        rng = random.Random(0)
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            busy = _busy_workers()
            if busy:
                victim = rng.choice(busy)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                except ProcessLookupError:  # it exited first: try another
                    continue
                killed.append(victim.pid)
            time.sleep(0.05)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    disturbed = run_clean(CleanConfig(), read_uri, str(tmp_path / "b"))
    thread.join(timeout=5)
    assert killed, "no busy worker was found to kill"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert _digest(disturbed) == _digest(reference) and len(_digest(reference)) >= 2
