"""The run-root lock: one driver per root, on local disk and on S3 (a real moto server on 127.0.0.1)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pipelines import run_lock, storage
from pipelines.cli import main

HOLD_SCRIPT = textwrap.dedent("""
    import sys, time
    from pipelines import run_lock
    root, lease, start_at, hold_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    time.sleep(max(0.0, start_at - time.time()))  # both processes try at the same moment
    try:
        with run_lock.hold(root, lease):
            print("WON", flush=True)
            sys.stdin.read() if hold_s < 0 else time.sleep(hold_s)  # < 0: until the test closes stdin
    except run_lock.LockHeld as e:
        print("REFUSED", e, flush=True)
""")


def _holder_process(root: str, lease_s: float = 30.0, hold_s: float = 60.0) -> subprocess.Popen:
    """Another driver, in its own process, that holds ``root`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, root, str(lease_s), "0", str(hold_s)],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "WON"
    return proc


def _lock_content(root: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(root, run_lock.LOCK_NAME)))


def _write_lock(root: str, **fields) -> None:
    holder = {"token": "t-old", "host": socket.gethostname(), "pid": os.getpid(), "started": 1.0,
              "expires": time.time() + 600, "lease_s": 600.0, **fields}
    storage.write_bytes_atomic(storage.join(root, run_lock.LOCK_NAME), json.dumps(holder).encode())


# --- local disk ---------------------------------------------------------------------------------------
def test_second_driver_refused_naming_holder(tmp_path, capsys):
    """A live driver holds the root: the library, the CLI (one line, exit 2, nothing written) and
    a second process are refused; status still reads the run."""
    root = str(tmp_path / "run")
    proc = _holder_process(root)
    try:
        held = _lock_content(root)
        with pytest.raises(run_lock.LockHeld) as e:
            run_lock.RunLock(root, 5).acquire()
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held["started"]))
        assert f"host {socket.gethostname()}, pid {proc.pid}, started {started}" in str(e.value)
        assert _lock_content(root) == held  # the refused driver changed nothing

        assert main(["run", "demo", f"root={root}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"bert-pipeline run: error: run root {root} is in use by another driver "
                              f"(host {socket.gethostname()}, pid {proc.pid}, started {started}, lease until ")
        assert len(err.splitlines()) == 1
        assert sorted(os.listdir(root)) == [run_lock.LOCK_NAME]  # no manifest, no stage output

        storage.write_json_atomic(storage.join(root, "manifest.json"),
                                  {"version": 1, "config_hash": "abc", "config": {}, "created": 0, "stages": {}})
        assert main(["status", root]) == 0  # status reads only, the lock is not needed
        assert capsys.readouterr().out.startswith(f"run at {root} (config abc)")
        assert _lock_content(root) == held
    finally:
        proc.kill()
        proc.wait()


def test_dead_pid_on_this_host_is_taken_over_at_once(tmp_path):
    root = str(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(root, pid=dead.pid)
    with run_lock.hold(root, 30) as lock:
        content = _lock_content(root)
        assert content["token"] == lock.holder.token != "t-old"
        assert content["pid"] == os.getpid()


def test_killed_unreaped_driver_is_dead(tmp_path):
    root = str(tmp_path / "run")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(300):  # until it has exited (a zombie: not yet waited for)
        with open(f"/proc/{zombie.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.1)
    try:
        _write_lock(root, pid=zombie.pid)
        with run_lock.hold(root, 30) as lock:
            assert _lock_content(root)["token"] == lock.holder.token
    finally:
        zombie.wait()


def test_expired_lease_is_taken_over(tmp_path):
    root = str(tmp_path / "run")
    _write_lock(root, host="another-host", pid=1, expires=time.time() - 1)
    with run_lock.hold(root, 30) as lock:
        assert _lock_content(root)["token"] == lock.holder.token
    _write_lock(root, host="another-host", pid=1, expires=time.time() + 600)
    with pytest.raises(run_lock.LockHeld, match="host another-host, pid 1, started 1970-01-01 00:00:01 UTC"):
        run_lock.RunLock(root, 30).acquire()


def test_lease_renewed_while_held_then_released(tmp_path):
    root = str(tmp_path / "run")
    with run_lock.hold(root, 0.6):
        first = _lock_content(root)["expires"]
        time.sleep(0.7)  # longer than the lease: only renewal keeps it
        second = _lock_content(root)
        assert second["expires"] > first and second["expires"] > time.time()
        run_lock.check(root)
    assert not os.path.exists(os.path.join(root, run_lock.LOCK_NAME))


def test_released_on_exception(tmp_path):
    root = str(tmp_path / "run")
    with pytest.raises(ZeroDivisionError):
        with run_lock.hold(root, 30):
            1 / 0
    assert not os.path.exists(root)  # the lock and the directory made for it are gone
    with run_lock.hold(root, 30):  # free again
        pass


def test_taken_over_lock_is_lost_and_not_deleted(tmp_path):
    root = str(tmp_path / "run")
    with run_lock.hold(root, 0.6):
        _write_lock(root, host="another-host", pid=1, token="t-new")  # a takeover after a stalled lease
        time.sleep(0.5)  # the next renewal sees the other token
        with pytest.raises(run_lock.LockLost, match="taken over by host another-host, pid 1"):
            run_lock.check(root)
    assert _lock_content(root)["token"] == "t-new"  # release never deletes someone else's lock


def test_pipeline_run_holds_the_lock(tmp_path):
    from pipelines.dag import Pipeline, Stage

    root = str(tmp_path / "run")
    seen = {}

    def stage(ctx):
        seen["token"] = _lock_content(ctx.root)["token"]
        out = storage.join(ctx.root, "a.txt")
        storage.write_bytes_atomic(out, b"a")
        return {"output": out}

    result = Pipeline([Stage("a", stage)]).run({}, root, log=lambda m: None, lease_s=30)
    assert result.ran == ["a"] and seen["token"]
    assert sorted(os.listdir(root)) == ["a.txt", "manifest.json"]  # lock released


def _race(root: str, n: int = 2, lease_s: float = 30.0) -> list[str]:
    """n processes try at the same moment; the winner holds until every process has answered."""
    start_at = time.time() + 2.5  # after every interpreter has started (a late one meets a held lock)
    procs = [subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, root, str(lease_s), str(start_at), "-1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(n)]
    outs = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    return outs


def test_two_processes_exactly_one_wins(tmp_path):
    root = str(tmp_path / "run")
    outs = _race(root, n=2)
    assert sorted(o.split()[0] for o in outs) == ["REFUSED", "WON"]
    assert all(f"host {socket.gethostname()}, pid" in o for o in outs if o.startswith("REFUSED"))
    assert not os.path.exists(root)


# --- S3 (moto) ------------------------------------------------------------------------------------------
def test_s3_second_driver_refused_stale_taken_over(s3_bucket):
    root = f"{s3_bucket}/runs/x"
    proc = _holder_process(root)
    try:
        held = _lock_content(root)
        assert held["pid"] == proc.pid
        with pytest.raises(run_lock.LockHeld, match=f"pid {proc.pid}, started "):
            run_lock.RunLock(root, 5).acquire()
    finally:
        proc.kill()
        proc.wait()
    with run_lock.hold(root, 0.6) as lock:  # the killed holder's pid is gone: taken over at once
        first = _lock_content(root)
        assert first["token"] == lock.holder.token and first["pid"] == os.getpid()
        time.sleep(0.7)
        assert _lock_content(root)["expires"] > first["expires"]
        run_lock.check(root)
    assert not storage.exists(storage.join(root, run_lock.LOCK_NAME))
    _write_lock(root, host="another-host", pid=1, expires=time.time() - 1)
    with run_lock.hold(root, 30) as lock:
        assert _lock_content(root)["token"] == lock.holder.token


def test_s3_conditional_writes_used(s3_bucket):
    """moto honours If-None-Match / If-Match: a create over an existing lock and a replace with an old
    ETag are both refused by the server itself."""
    store = run_lock._S3Store(f"{s3_bucket}/r")
    assert store.conditional
    a = run_lock.Holder("a", "h", 1, 1.0, time.time() + 60, 60.0)
    etag = store.create(a)
    with pytest.raises(run_lock._Conflict):
        store.create(run_lock.Holder("b", "h", 2, 1.0, time.time() + 60, 60.0))
    assert store.replace(run_lock.Holder("a", "h", 1, 1.0, time.time() + 61, 60.0), etag) != etag  # renewed
    with pytest.raises(run_lock._Conflict):
        store.replace(run_lock.Holder("c", "h", 3, 1.0, time.time() + 60, 60.0), etag)
    assert store.read()[0].token == "a"


def test_s3_two_processes_exactly_one_wins(s3_bucket):
    outs = _race(f"{s3_bucket}/runs/race")
    assert sorted(o.split()[0] for o in outs) == ["REFUSED", "WON"]


def _ignoring_conditions_client():
    """A client whose conditional headers never reach the server: what a server that ignores them sees."""
    client = storage.s3_client()

    def strip(request, **_):
        for h in ("If-None-Match", "If-Match"):
            if h in request.headers:
                del request.headers[h]

    client.meta.events.register("before-send.s3.*", strip)
    return client


def test_s3_without_conditional_writes_falls_back_to_write_then_verify(s3_bucket):
    root = f"{s3_bucket}/runs/plain"
    warnings = []
    kwargs = {"client": _ignoring_conditions_client(), "settle_s": 0.2, "warn": warnings.append}
    with run_lock.hold(root, 30, **kwargs) as lock:
        assert not lock.store.conditional
        assert warnings and "ignores conditional writes" in warnings[0] and "write-then-verify" in warnings[0]
        with pytest.raises(run_lock.LockHeld, match=f"pid {os.getpid()}"):
            run_lock.RunLock(root, 30, **kwargs).acquire()
    assert not storage.exists(storage.join(root, run_lock.LOCK_NAME))
    # a racing writer that lands inside the settle window: the verify sees its token and gives up
    store = run_lock._S3Store(root, **kwargs)
    other = run_lock.Holder("other", "another-host", 1, 1.0, time.time() + 60, 60.0)
    mine = run_lock.Holder("mine", "h", 2, 1.0, time.time() + 60, 60.0)
    store._put(mine)
    store.settle_s = 0.0
    storage.write_bytes_atomic(store.uri, other.to_bytes())  # lands after our PUT, before our re-read
    with pytest.raises(run_lock._Conflict):
        store._verified(mine)
