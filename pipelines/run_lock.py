"""One driver per run root: a lease lock at ``{root}/run.lock``, on local disk and on S3.

    with run_lock.hold(root, lease_s=120):      # LockHeld (naming host, pid, start time) if another driver has it
        ...                                     # a background thread renews the lease every lease_s / 3

``bert-pipeline run`` takes the lock before it plans, starts Ray or writes the manifest, so a second
driver on the same root (a second shell, or a second Ray job: ``submit`` runs ``bert-pipeline run`` on
the cluster) is refused before any work. ``Pipeline.run`` takes it too (a no-op when this process
already holds it), so library callers are covered. ``bert-pipeline status`` only reads and never needs it.

The lock file is JSON: a random owner token, host, pid, start time and ``expires`` (wall clock). It is
*stale*, and the next driver takes it over, when its lease has expired or when its holder ran on this
host and its pid is gone (a killed driver on the same machine is replaced at once, not after a lease).
Every change is conditional on the state just read, so of two drivers racing for a free or stale lock
exactly one wins:

* Local disk: each read-decide-write runs under ``flock`` on the run-root directory itself (released by
  the kernel when a process dies, so a dead driver never blocks anyone), and writes are atomic: create
  is a hard link of a complete temporary file (fails with EEXIST like ``O_CREAT|O_EXCL``, but readers
  never see a half-written file), renew and takeover an ``os.replace`` after re-reading the owner
  token. A takeover needs the lease to have expired by the holder's own clock, and a holder trusts its
  lock only until that same ``expires``, so on one host there is no moment where two drivers both hold it.
* S3: conditional writes. Create is ``PutObject`` with ``If-None-Match: *``, renew and takeover
  ``PutObject`` with ``If-Match: <ETag just read>``, release ``DeleteObject`` with ``If-Match``. A 412
  (or 409) means another driver changed the lock first: the writer has lost and says who holds it.
  AWS S3 and moto (>= 5.0) support these. Hosts on S3 trust their own clocks: a holder whose clock
  runs behind a taker's by more than lease/3 can overlap it, so keep clocks in NTP sync.
* S3-compatible servers that ignore the conditions (detected once per bucket: a probe object is put
  twice with ``If-None-Match: *``; if the second PUT succeeds, the server ignored it) fall back to
  write-then-verify, with a warning: read, write only if free, stale or ours, wait ``settle_s``
  (default 1 s), re-read and keep the lock only if our token is still there. Race window: two drivers
  that both read the lock as free and whose writes land more than ``settle_s`` apart (one stalled that
  long between its read and its write) can both believe they hold it. Use a server with conditional
  writes for runs that matter.

A holder that finds its lock taken over (renewal saw another token, or renewals failed until the lease
ran out) is *lost*: ``check`` raises ``LockLost``, which ``Pipeline`` calls before every manifest write,
so the run stops at its next stage boundary without touching the new holder's manifest. Credentials
come from boto3's default chain (environment, instance role); nothing here logs or stores them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipelines import storage

LOCK_NAME = "run.lock"
DEFAULT_LEASE_S = 120.0


class LockError(RuntimeError):
    """The run-root lock cannot be taken or kept; the message names the root."""


class LockHeld(LockError):
    """Another live driver holds the run root; the message names it (host, pid, start time)."""


class LockLost(LockError):
    """This driver's lock was taken over (its lease ran out); it must stop writing to the root."""


class _Conflict(Exception):
    """A conditional write lost against another driver's write."""


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@dataclass(frozen=True)
class Holder:
    """The content of the lock file."""

    token: str
    host: str
    pid: int
    started: float
    expires: float
    lease_s: float

    def describe(self) -> str:
        return (f"host {self.host}, pid {self.pid}, started {_utc(self.started)}, "
                f"lease until {_utc(self.expires)}")

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, uri: str) -> Holder:
        try:
            return cls(**json.loads(data.decode("utf-8")))
        except (ValueError, TypeError) as e:
            raise LockError(f"{uri}: not a run lock ({type(e).__name__}: {e}); if no driver runs on this "
                            "root, delete the file") from e


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:  # a killed driver its parent has not reaped yet is a zombie: dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(holder: Holder, now: float) -> bool:
    """Expired lease, or a holder on this host whose process is gone."""
    if now > holder.expires:
        return True
    return holder.host == socket.gethostname() and not pid_alive(holder.pid)


# --- stores: read / create / replace / delete, conditional on the version just read ---------------
class _LocalStore:
    """The lock file on local disk; every operation runs under flock on the root directory."""

    def __init__(self, root: str):
        self.dir = os.path.abspath(root[len("file://"):] if root.startswith("file://") else root)
        self.path = os.path.join(self.dir, LOCK_NAME)
        self.uri = self.path
        self.created: list[str] = []  # directories made for the lock, removed on release when still empty

    def tidy(self) -> None:
        for d in reversed(self.created):  # a refused or empty run leaves no trace
            with contextlib.suppress(OSError):
                os.rmdir(d)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        if not os.path.isdir(self.dir):
            d = self.dir
            while not os.path.exists(d):
                self.created.insert(0, d)
                d = os.path.dirname(d)
            os.makedirs(self.dir, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held for milliseconds; the kernel drops it if we die
            except OSError as e:
                raise LockError(f"run root {self.dir}: its filesystem does not support flock ({e}); "
                                "use a local disk or s3:// for the run root") from e
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def read(self) -> tuple[Holder | None, Any]:
        try:
            with open(self.path, "rb") as f:
                holder = Holder.from_bytes(f.read(), self.uri)
        except FileNotFoundError:
            return None, None
        return holder, holder.token

    def _write_tmp(self, holder: Holder) -> str:
        tmp = f"{self.path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(holder.to_bytes())
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def create(self, holder: Holder) -> Any:
        tmp = self._write_tmp(holder)
        try:
            os.link(tmp, self.path)  # atomic and exclusive: EEXIST if a lock file is there
        except FileExistsError as e:
            raise _Conflict() from e
        finally:
            os.unlink(tmp)
        return holder.token

    def replace(self, holder: Holder, version: Any) -> Any:
        current, now_version = self.read()
        if current is None or now_version != version:
            raise _Conflict()
        os.replace(self._write_tmp(holder), self.path)
        return holder.token

    def delete(self, version: Any) -> None:
        _, now_version = self.read()
        if now_version != version:
            raise _Conflict()
        os.unlink(self.path)


_CONDITIONS_SUPPORTED: dict[tuple[str | None, str], bool] = {}


def _s3_code(e: Exception) -> tuple[str, int]:
    resp = getattr(e, "response", {}) or {}
    return str(resp.get("Error", {}).get("Code", "")), int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_conflict(e: Exception) -> bool:
    code, status = _s3_code(e)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


class _S3Store:
    """The lock object on S3, changed only by conditional PUT/DELETE (or write-then-verify, see above)."""

    def __init__(self, root: str, client: Any = None, settle_s: float = 1.0, warn: Callable[[str], None] | None = None):
        self.bucket, prefix = storage.s3_bucket_key(root)
        self.key = f"{prefix.strip('/')}/{LOCK_NAME}" if prefix.strip("/") else LOCK_NAME
        self.uri = f"s3://{self.bucket}/{self.key}"
        self.client = client if client is not None else storage.s3_client()
        self.settle_s = settle_s
        self.warn = warn or (lambda m: print(m, file=sys.stderr, flush=True))

    @property
    def conditional(self) -> bool:
        """Probed on the first write, so reading the holder (``status``) writes nothing."""
        return self._conditions_supported()

    def critical(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _conditions_supported(self) -> bool:
        cache_key = (getattr(self.client.meta, "endpoint_url", None), self.bucket)
        if cache_key not in _CONDITIONS_SUPPORTED:
            _CONDITIONS_SUPPORTED[cache_key] = self._probe()
            if not _CONDITIONS_SUPPORTED[cache_key]:
                self.warn(f"warning: the S3 server for {self.bucket} ignores conditional writes (If-None-Match); "
                          f"the run lock falls back to write-then-verify (race window: writes more than "
                          f"{self.settle_s:g}s apart)")
        return _CONDITIONS_SUPPORTED[cache_key]

    def _probe(self) -> bool:
        from botocore.exceptions import ClientError

        key = f"{self.key}.probe-{uuid.uuid4().hex}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"probe")
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"probe", IfNoneMatch="*")
                return False  # the second create of an existing key went through: the header was ignored
            except ClientError as e:
                code, status = _s3_code(e)
                if _is_conflict(e):
                    return True
                if status in (400, 501) or code == "NotImplemented":
                    return False
                raise
            finally:
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            raise LockError(f"cannot write the run lock at {self.uri}: {e}") from e

    def read(self) -> tuple[Holder | None, Any]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if _s3_code(e)[0] in ("NoSuchKey", "404"):
                return None, None
            raise LockError(f"cannot read the run lock at {self.uri}: {e}") from e
        return Holder.from_bytes(obj["Body"].read(), self.uri), obj["ETag"]

    def _put(self, holder: Holder, **condition: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=holder.to_bytes(), **condition)["ETag"]
        except ClientError as e:
            if _is_conflict(e) or _s3_code(e)[0] in ("NoSuchKey", "404"):  # If-Match on a deleted lock
                raise _Conflict() from e
            raise LockError(f"cannot write the run lock at {self.uri}: {e}") from e

    def _verified(self, holder: Holder) -> Any:
        time.sleep(self.settle_s)  # let a racing writer's PUT land, then see whose token survived
        current, version = self.read()
        if current is None or current.token != holder.token:
            raise _Conflict()
        return version

    def create(self, holder: Holder) -> Any:
        if self.conditional:
            return self._put(holder, IfNoneMatch="*")
        if self.read()[0] is not None:
            raise _Conflict()
        self._put(holder)
        return self._verified(holder)

    def replace(self, holder: Holder, version: Any) -> Any:
        if self.conditional:
            return self._put(holder, IfMatch=version)
        if self.read()[1] != version:
            raise _Conflict()
        self._put(holder)
        return self._verified(holder)

    def delete(self, version: Any) -> None:
        from botocore.exceptions import ClientError

        if not self.conditional and self.read()[1] != version:
            raise _Conflict()
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)
        except ClientError as e:
            if _is_conflict(e) or _s3_code(e)[0] in ("NoSuchKey", "404"):
                raise _Conflict() from e
            raise LockError(f"cannot delete the run lock at {self.uri}: {e}") from e


def _store(root: str, **kwargs: Any) -> _LocalStore | _S3Store:
    if storage.is_local(root):
        return _LocalStore(root)
    if root.startswith("s3://"):
        return _S3Store(root, **kwargs)
    raise LockError(f"run root {root}: the run lock supports local paths and s3:// only")


# --- the lock ---------------------------------------------------------------------------------------
class RunLock:
    """A held lock; renewed by a daemon thread until ``release``."""

    def __init__(self, root: str, lease_s: float = DEFAULT_LEASE_S, **store_kwargs: Any):
        if not lease_s > 0:
            raise LockError(f"lock lease must be > 0 seconds, got {lease_s!r}")
        self.root, self.lease_s = root, float(lease_s)
        self.store = _store(root, **store_kwargs)
        self.holder: Holder | None = None
        self.version: Any = None
        self.lost: LockLost | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()  # renewal thread vs release

    def _new_holder(self, token: str, started: float) -> Holder:
        now = time.time()
        return Holder(token=token, host=socket.gethostname(), pid=os.getpid(), started=started,
                      expires=now + self.lease_s, lease_s=self.lease_s)

    def acquire(self) -> RunLock:
        """Take the lock (or a stale one over); LockHeld naming the holder when a live driver has it."""
        mine = self._new_holder(uuid.uuid4().hex, time.time())
        with self.store.critical():
            current, version = self.store.read()
            try:
                if current is None:
                    self.version = self.store.create(mine)
                elif is_stale(current, time.time()):
                    self.version = self.store.replace(mine, version)
                else:
                    raise self._held(current)
            except _Conflict:  # another driver wrote first: report whoever holds it now
                winner, _ = self.store.read()
                raise self._held(winner) from None
        self.holder = mine
        self._thread = threading.Thread(target=self._renew_loop, name=f"run-lock {self.root}", daemon=True)
        self._thread.start()
        return self

    def _held(self, holder: Holder | None) -> LockHeld:
        who = holder.describe() if holder else "a driver that has just released it"
        return LockHeld(f"run root {self.root} is in use by another driver ({who}); nothing was run. "
                        f"A lock whose driver is gone is taken over when its lease ends, or at once on its "
                        f"host once its pid has exited (lock file {self.store.uri})")

    def renew(self) -> None:
        """Push ``expires`` forward; LockLost if someone else's token is there now."""
        with self._mutex:
            if self.holder is None or self.lost:
                return
            renewed = dataclasses.replace(self.holder, expires=time.time() + self.lease_s)
            with self.store.critical():
                current, version = self.store.read()
                if current is None or current.token != self.holder.token:
                    self.lost = LockLost(f"run root {self.root}: this driver's lock was taken over by "
                                         f"{current.describe() if current else 'nobody (it was deleted)'}; "
                                         "this driver stops writing to it")
                    raise self.lost
                try:
                    self.version = self.store.replace(renewed, version)
                except _Conflict:
                    self.lost = LockLost(f"run root {self.root}: this driver's lock changed hands while "
                                         "renewing it; this driver stops writing to it")
                    raise self.lost from None
            self.holder = renewed

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except LockLost as e:
                print(f"bert-pipeline: {e}", file=sys.stderr, flush=True)
                return
            except Exception as e:  # a transient storage error: try again; check() fails once the lease is out
                print(f"bert-pipeline: renewing the run lock of {self.root} failed ({type(e).__name__}: {e}); "
                      "retrying", file=sys.stderr, flush=True)

    def check(self) -> None:
        """Raise LockLost unless this driver still holds the lock (by its own clock)."""
        if self.lost:
            raise self.lost
        if self.holder is None or time.time() > self.holder.expires:
            raise LockLost(f"run root {self.root}: this driver's lease ran out before it could be renewed; "
                           "another driver may hold the root now, so this one stops writing to it")

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours (never someone else's)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if self.holder is None:
                return
            token, self.holder = self.holder.token, None
            if self.lost:
                return
            with self.store.critical():
                current, version = self.store.read()
                if current is not None and current.token == token:
                    with contextlib.suppress(_Conflict):
                        self.store.delete(version)
            if isinstance(self.store, _LocalStore):
                self.store.tidy()


# Locks this process holds, by run root: nested hold() calls (the CLI, then Pipeline.run) share one.
_HELD: dict[str, RunLock] = {}


def _key(root: str) -> str:
    return os.path.abspath(root[len("file://"):] if root.startswith("file://") else root) \
        if storage.is_local(root) else root.rstrip("/")


@contextlib.contextmanager
def hold(root: str, lease_s: float | None = None, **store_kwargs: Any) -> Iterator[RunLock]:
    """Hold the run root's lock for the block; re-entrant within one process."""
    key = _key(root)
    if key in _HELD:
        yield _HELD[key]
        return
    lock = RunLock(root, DEFAULT_LEASE_S if lease_s is None else lease_s, **store_kwargs).acquire()
    _HELD[key] = lock
    try:
        yield lock
    finally:
        del _HELD[key]
        lock.release()


def check(root: str) -> None:
    """LockLost if this process held ``root``'s lock and lost it; nothing when it holds none."""
    lock = _HELD.get(_key(root))
    if lock is not None:
        lock.check()


def read_holder(root: str, **store_kwargs: Any) -> Holder | None:
    """Who holds the root now (None: nobody); reads only, takes nothing."""
    return _store(root, **store_kwargs).read()[0]
