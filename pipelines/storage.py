"""Every byte the pipeline reads or writes goes through here.

Paths are URIs: a plain path or ``file://`` for local disk, ``s3://bucket/key`` (an S3-compatible
endpoint is taken from ``AWS_ENDPOINT_URL``), ``gs://``, ``http(s)://`` for reads, and ``demo:NAME`` for
the files shipped in ``pipelines/demo/`` (read-only; the name, never the install location, is what
listings return, so a stage's identity and rows do not depend on where the package is installed).
A listing returns paths in the form it was given (relative, absolute, ``file://``, ``demo:``). Streams go
through smart-open (transparent ``.gz``/``.bz2``/``.zst``); listings, globbing and renames go through
pyarrow's filesystems so Ray Data can be handed the same ``(filesystem, path)`` pair.

Writes that must never be seen half-done use ``write_bytes_atomic`` (temporary name, then rename;
on object stores a single PUT is already atomic).
"""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import posixpath
import uuid
from typing import Any, BinaryIO, Callable, Iterator

import pyarrow.fs as pafs
import smart_open

COPY_THREADS = 32
"""Object-store calls in flight at once when a commit copies many files."""


DEMO_SCHEME = "demo:"
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
"""Where ``demo:NAME`` points: the demo corpus and task shipped inside the package."""


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def is_demo(uri: str) -> bool:
    return uri.startswith(DEMO_SCHEME)


def resolve_path(uri: str) -> str:
    """A URI as this machine opens it: ``demo:corpus`` -> the installed ``pipelines/demo/corpus``;
    other URIs unchanged. Only for code that hands a path to a library; storage's own calls take
    ``demo:`` URIs as they are."""
    if is_demo(uri):
        return os.path.join(DEMO_DIR, uri[len(DEMO_SCHEME):].lstrip("/"))
    return uri


def absolute(uri: str) -> str:
    """A relative local path made absolute against the current directory (what a user means by
    ``runs/demo`` where they typed it); every other URI unchanged."""
    if is_local(uri) and not is_demo(uri) and not uri.startswith("file://") and not os.path.isabs(uri):
        return os.path.abspath(uri)
    return uri


def _strip_file_scheme(uri: str) -> str:
    uri = resolve_path(uri)
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (never the OS separator)."""
    out = uri.rstrip("/")
    for part in parts:
        out = out + "/" + str(part).strip("/")
    return out


# Object-store settings a driver may hand to Ray workers: none of them is a secret.
SETTINGS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
# Never leave the process they are set in, as task arguments, runtime_env values or pickled
# filesystems: each process takes them from its own environment (the node's role on a cluster; the
# environment the driver started a local Ray with).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")


def capture_env() -> dict[str, str]:
    """The driver's non-secret object-store settings (endpoint, region), to hand to Ray workers
    started before they were set. Credentials are never captured."""
    return {k: os.environ[k] for k in SETTINGS_ENV if k in os.environ}


def apply_env(env: dict[str, str]) -> None:
    """In a worker: adopt settings captured by ``capture_env`` in the driver."""
    secret = sorted(set(env) - set(SETTINGS_ENV))
    if secret:
        raise ValueError(f"apply_env takes object-store settings only, not {secret}: credentials never travel")
    for k, v in env.items():
        if os.environ.get(k) != v:
            os.environ[k] = v


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for a URI and the path inside it."""
    if is_local(uri):
        return pafs.LocalFileSystem(), os.path.abspath(_strip_file_scheme(uri))
    if uri.startswith("s3://"):
        endpoint = s3_endpoint()
        # allow_delayed_open: a write below pyarrow's part size is one PutObject instead of a
        # multipart upload (3 requests). Larger ones go multipart (PYARROW_S3_PART_SIZE); moto
        # 5.2.0-5.2.1 named that reply's root element wrongly and pyarrow took it for an error.
        kwargs: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                                  "allow_delayed_open": True}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host, scheme=scheme or "http")
        # No explicit keys: pyarrow's default credential chain runs in whichever process uses the
        # filesystem, and a pickled S3FileSystem (a Ray Data or Ray Train argument) holds no secret.
        return pafs.S3FileSystem(**kwargs), uri[len("s3://"):]
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


# S3 multipart limits (AWS): at most 10,000 parts of 5 MiB to 5 GiB (the last may be smaller).
S3_MAX_PARTS = 10_000
S3_MIN_PART_SIZE, S3_MAX_PART_SIZE = 5 << 20, 5 << 30
# pyarrow's S3 output stream (write_bytes_atomic, Ray Data and Ray Train checkpoint uploads) uses
# fixed 10 MiB parts, so one object it writes holds at most 10,000 x 10 MiB = 97.7 GiB.
PYARROW_S3_PART_SIZE = 10 << 20
# Streams opened for writing by open_uri (smart-open) upload parts of at least this size: 10,000
# of them hold 625 GiB, and a part is buffered in memory.
S3_STREAM_PART_SIZE = 64 << 20


def s3_part_size(num_bytes: int) -> int:
    """The multipart part size for an object of ``num_bytes``: ``S3_STREAM_PART_SIZE``, or larger (a
    whole MiB) so the object fits in 10,000 parts."""
    needed = -(-num_bytes // S3_MAX_PARTS)
    size = max(S3_STREAM_PART_SIZE, -(-needed // (1 << 20)) << 20)
    if size > S3_MAX_PART_SIZE:
        raise ValueError(f"{num_bytes} bytes do not fit in one S3 object ({S3_MAX_PARTS} parts of at most 5 GiB)")
    return size


def _transport_params(uri: str, mode: str = "rb", num_bytes: int | None = None) -> dict[str, Any] | None:
    if not uri.startswith("s3://"):
        return None
    params: dict[str, Any] = {}
    if s3_endpoint():
        params["client"] = s3_client()
    if "r" not in mode:
        params["min_part_size"] = s3_part_size(num_bytes or 0)
    return params or None


def open_uri(uri: str, mode: str = "rb", compression: str = "infer_from_extension", **kwargs) -> Any:
    """Open a URI for streaming (smart-open); compression inferred from the extension."""
    if mode == "rb" and compression == "infer_from_extension" and uri.endswith(".zst"):
        # smart-open wants backports.zstd on Python < 3.14; the zstandard package does the same
        import zstandard

        raw = smart_open.open(_strip_file_scheme(uri), "rb", compression="disable",
                              transport_params=_transport_params(uri), **kwargs)
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return smart_open.open(
        _strip_file_scheme(uri), mode, compression=compression,
        transport_params=_transport_params(uri, mode), **kwargs,
    )


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    return int(info.size or 0)


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """All files under a directory URI, sorted (deterministic order for every caller), in the form
    ``uri`` was given: ``runs/x`` lists ``runs/x/...``, ``demo:corpus`` lists ``demo:corpus/...``."""
    fs, path = filesystem(uri)
    base, given = path.rstrip("/"), uri.rstrip("/")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    return sorted(given + i.path[len(base):] for i in infos if i.type == pafs.FileType.File)


def expand(pattern: str) -> list[str]:
    """Expand a file, a directory (all files under it) or a glob pattern into sorted file URIs.

    Raises FileNotFoundError naming the pattern when nothing matches.
    """
    if not any(ch in pattern for ch in "*?["):
        if pattern.startswith(("http://", "https://")):
            return [pattern]
        if is_dir(pattern):
            files = [f for f in list_files(pattern) if not posixpath.basename(f).startswith((".", "_"))]
            if not files:
                raise FileNotFoundError(f"directory {pattern!r} holds no files")
            return files
        if not exists(pattern):
            raise FileNotFoundError(f"input {pattern!r} does not exist")
        return [pattern]
    # Walk from the longest prefix with no wildcard; listings keep the pattern's form.
    head = pattern
    while any(ch in head for ch in "*?["):
        head = posixpath.dirname(head)
    listed = list_files(head) if head else [f[2:] for f in list_files(".")]
    matches = [f for f in listed if fnmatch.fnmatchcase(f, pattern)]
    if not matches:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    return matches


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        # a random-access file knows its size: one GET on S3 (a stream reads in many small ranged
        # GETs: 50 MB took 15 s from moto against 0.35 s)
        with fs.open_input_file(path) as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{uri}: no such file") from e


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a whole file so readers see either the old state or the complete new file."""
    if is_local(uri):
        with atomic_output(uri) as f:
            f.write(data)
        return
    with _remote_output(uri, len(data)) as f:
        f.write(data)


def _with_parent(uri: str) -> tuple[pafs.FileSystem, str]:
    """``filesystem(uri)``, with the directory that will hold ``uri`` created."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    return fs, path


def _remote_output(uri: str, num_bytes: int) -> Any:
    """An object-store output stream for ``num_bytes``: one PUT or one multipart upload, atomic (nothing
    shows until it completes); beyond pyarrow's fixed parts, smart-open's sized ones."""
    fs, path = _with_parent(uri)
    if uri.startswith("s3://") and num_bytes > S3_MAX_PARTS * PYARROW_S3_PART_SIZE:
        return smart_open.open(uri, "wb", compression="disable", transport_params=_transport_params(uri, "wb", num_bytes))
    return fs.open_output_stream(path)


@contextlib.contextmanager
def atomic_output(uri: str) -> Iterator[Any]:
    """A binary output stream whose bytes appear at ``uri``, whole, when the block ends without an
    error (``write_bytes_atomic`` for a writer that streams: a large file is never all in memory).
    Local: a temporary file beside it, renamed into place. Remote: a local spool file, uploaded when
    complete (one PUT or a multipart upload, which shows nothing until it completes)."""
    import tempfile

    import pyarrow as pa

    if is_local(uri):
        fs, path = _with_parent(uri)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        done = False
        try:
            with fs.open_output_stream(tmp) as f:
                yield f
            os.replace(tmp, path)
            done = True
        except OSError as e:  # e.g. a full disk: pyarrow's message names no path
            raise OSError(getattr(e, "errno", None) or errno.EIO, f"cannot write {uri}: {e}") from e
        finally:
            if not done:  # no half file stays
                with contextlib.suppress(OSError):
                    os.remove(tmp)
        return
    with tempfile.TemporaryDirectory(prefix="upload-") as spool_dir:
        spool = os.path.join(spool_dir, "spool")
        with pa.OSFile(spool, "wb") as f:
            yield f
        upload_file(spool, uri)


def upload_file(local_path: str, uri: str) -> None:
    """Copy a local file to a remote ``uri`` in 8 MB reads (atomic: see ``_remote_output``)."""
    with open(local_path, "rb") as src, _remote_output(uri, os.path.getsize(local_path)) as out:
        while chunk := src.read(8 << 20):
            out.write(chunk)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json_atomic(uri: str, obj: Any) -> None:
    write_bytes_atomic(uri, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def make_dirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


def remove_tree(uri: str) -> None:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def move_tree(src: str, dst: str) -> None:
    """Move a directory; a rename on local disk, copy-then-delete on object stores."""
    fs, src_path = filesystem(src)
    _, dst_path = filesystem(dst)
    if is_local(src):
        os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        os.replace(src_path, dst_path)
        return
    infos = fs.get_file_info(pafs.FileSelector(src_path, recursive=True, allow_not_found=True))

    def copy(info: pafs.FileInfo) -> None:
        target = posixpath.join(dst_path, info.path[len(src_path.rstrip("/")) + 1:])
        if src.startswith("s3://") and (info.size or 0) > S3_MAX_COPY_SIZE:
            _s3_multipart_copy(info.path, target, int(info.size))
        else:  # pyarrow copies within S3 with one CopyObject
            pafs.copy_files(info.path, target, source_filesystem=fs, destination_filesystem=fs)

    # server-side copies, many at once: a stage of 10^5 files commits in minutes, not hours
    files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
    parallel_map(copy, files)
    fs.delete_dir(src_path)


def parallel_map(fn: Callable[[Any], Any], items: list, max_workers: int = COPY_THREADS) -> list:
    """``[fn(x) for x in items]`` on a thread pool (object-store calls wait on the network); the
    first error is raised."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        return list(pool.map(fn, items))


# One CopyObject copies at most 5 GiB (AWS); a larger object is copied part by part (UploadPartCopy).
S3_MAX_COPY_SIZE = 5 << 30


def _s3_multipart_copy(src_path: str, dst_path: str, num_bytes: int) -> None:
    from boto3.s3.transfer import TransferConfig

    src_bucket, _, src_key = src_path.partition("/")
    dst_bucket, _, dst_key = dst_path.partition("/")
    config = TransferConfig(multipart_threshold=S3_MAX_COPY_SIZE, multipart_chunksize=s3_part_size(num_bytes))
    s3_client().copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key, Config=config)


def iter_lines(uri: str, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
    with open_uri(uri, "rb") as raw:
        import io

        with io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="") as f:
            yield from f


def open_binary(uri: str) -> BinaryIO:
    return open_uri(uri, "rb")


def s3_bucket_key(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client for ``AWS_ENDPOINT_URL`` (or AWS); credentials from boto3's default chain
    (environment, shared config, instance role), never passed or stored here."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint(), region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
