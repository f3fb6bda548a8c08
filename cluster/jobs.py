"""Run the pipeline as a Ray job on a cluster (Ray Jobs SDK), follow its logs, stop it.

    bert-pipeline submit --address http://HEAD:8265 pipelines/presets/base.yaml run.root=s3://bucket/runs/base
    bert-pipeline logs --address http://HEAD:8265 JOB_ID [--follow]
    bert-pipeline stop --address http://HEAD:8265 JOB_ID

The config is loaded and validated here, on the submitting machine, so a typo fails before anything
is uploaded; the resolved config travels to the job as JSON on the entrypoint's command line and the
project itself travels as the job's ``runtime_env`` working directory (runs, caches and .git left out).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
import time
import warnings
from typing import Any, Callable, Iterator

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Left out of the uploaded working directory: outputs, caches, VCS data.
EXCLUDES = [".git", "runs", "bench_out", "**/__pycache__", "*.egg-info", ".pytest_cache", "build", "dist",
            ".venv", ".whl", ".gl"]
# Environment passed through to the job when set here (never credentials: nodes get those from their role).
PASSED_ENV = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "DS_ACCELERATOR", "RAY_TRAIN_V2_ENABLED")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class ClusterError(RuntimeError):
    """The cluster cannot be reached or refused the request; the message says which address."""


def resolve_address(address: str | None) -> str:
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


def is_loopback(address: str) -> bool:
    """A dashboard URL on this machine (a local job server, or `ray dashboard`'s tunnel to a cluster)."""
    from urllib.parse import urlparse

    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


START_HINT = ("start a job server on this machine with `python -m cluster.local` (in another terminal), or forward "
              "a cluster's with `ray dashboard ray_cluster.yaml`")


@contextlib.contextmanager
def quiet_ray(log_path: str | None = None) -> Iterator[str]:
    """Ray's client-side logging (package uploads, token-auth notices, closed log streams) to a log file
    instead of the terminal; yields the file's path."""
    import logging
    import tempfile

    import ray.job_submission  # noqa: F401  (importing Ray sets up its handlers: replace them after)

    path = log_path or os.path.join(tempfile.gettempdir(), "bert-pipeline", f"jobs-{os.getpid()}.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("ray", "ray.dashboard", "ray.dashboard.modules.job.sdk",
                                                "ray._private.runtime_env", "aiohttp", "asyncio")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield path
        finally:
            for lg, handlers, propagate in saved:
                lg.handlers, lg.propagate = handlers, propagate
            handler.close()


def _job_error(address: str | None, job_id: str, e: Exception) -> ClusterError:
    text = str(e)
    if "404" in text or "does not exist" in text or "not found" in text.lower():
        return ClusterError(f"no job {job_id!r} at {resolve_address(address)} (`ray job list --address "
                            f"{resolve_address(address)}` lists the jobs there)")
    return ClusterError(f"{resolve_address(address)}: job {job_id}: {type(e).__name__}: {text.splitlines()[0] if text else ''}")


def connect(address: str | None):
    """A JobSubmissionClient for ``address``; a clear error when nothing answers there."""
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    _use_token_auth_if_available()
    if not address.startswith(("http://", "https://")):
        raise ClusterError(f"--address {address!r}: expected the dashboard URL, e.g. http://HEAD:8265")
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # ConnectionError, or a RuntimeError wrapping one
        hint = ""
        if "Authentication" in type(e).__name__:
            hint = (" (the cluster uses token auth: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, or put the "
                    "cluster's token in ~/.ray/auth_token)")
        elif is_loopback(address):
            hint = f" (nothing answers there: {START_HINT})"
        raise ClusterError(f"cannot reach a Ray cluster at {address}{hint}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e


def _use_token_auth_if_available() -> None:
    """Send the cluster token when one is configured (Ray's own clients only do so when RAY_AUTH_MODE=token)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:  # a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def runtime_env(extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    from pipelines.storage import SECRET_ENV

    secret = sorted(set(extra_env or {}) & set(SECRET_ENV))
    if secret:  # a runtime_env is readable by anyone with the dashboard: nodes use their role
        raise ClusterError(f"{secret} would travel in the job's runtime_env; credentials never do")
    env = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    env.update(extra_env or {})
    return {"working_dir": PROJECT_ROOT, "excludes": EXCLUDES, "env_vars": env}


def run_entrypoint(resolved_config: dict[str, Any], from_stage: str | None, until: str | None,
                   verbose: bool = False) -> str:
    """``verbose``: Ray's own logs in the job's logs too (else they go to the run's log file)."""
    args = ["python", "-m", "pipelines.cli", "run",
            "--config-json", json.dumps(resolved_config, sort_keys=True, separators=(",", ":"))]
    if from_stage:
        args += ["--from", from_stage]
    if until:
        args += ["--until", until]
    if verbose:
        args.append("--verbose")
    return " ".join(shlex.quote(a) for a in args)


def finetune_entrypoint(checkpoint_uri: str, resolved_config: dict[str, Any], verbose: bool = False) -> str:
    args = ["python", "-m", "pipelines.cli", "finetune", checkpoint_uri,
            "--config-json", json.dumps(resolved_config, sort_keys=True, separators=(",", ":"))]
    if verbose:
        args.append("--verbose")
    return " ".join(shlex.quote(a) for a in args)


def submit(address: str | None, entrypoint: str, extra_env: dict[str, str] | None = None,
           submission_id: str | None = None, metadata: dict[str, str] | None = None) -> str:
    client = connect(address)
    deadline = time.time() + 60
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(extra_env),
                                     submission_id=submission_id, metadata=metadata)
        except Exception as e:
            # A head that has just started answers before its job agent is up.
            if "No available agent" in str(e) and time.time() < deadline:
                time.sleep(1.0)
                continue
            raise ClusterError(f"submitting to {resolve_address(address)} failed: {e}") from e


def status(address: str | None, job_id: str) -> str:
    client = connect(address)
    try:
        return str(client.get_job_status(job_id).value)
    except Exception as e:
        raise _job_error(address, job_id, e) from e


def logs(address: str | None, job_id: str) -> str:
    client = connect(address)
    try:
        return client.get_job_logs(job_id)
    except Exception as e:
        raise _job_error(address, job_id, e) from e


def follow(address: str | None, job_id: str, write: Callable[[str], Any] = sys.stdout.write) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    client = connect(address)
    status(address, job_id)  # an unknown job is a clear error, not a log stream that never starts

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(_tail())
    except Exception as e:  # the log stream can drop (e.g. head restarts); the status poll below still ends it
        import logging

        logging.getLogger("ray").info("log stream of job %s ended: %s: %s", job_id, type(e).__name__, e)
    return wait(address, job_id)


def wait(address: str | None, job_id: str, timeout_s: float = 3600.0) -> str:
    deadline = time.time() + timeout_s
    while True:
        state = status(address, job_id)
        if state in TERMINAL or time.time() > deadline:
            return state
        time.sleep(0.5)


def stop(address: str | None, job_id: str) -> bool:
    client = connect(address)
    try:
        return client.stop_job(job_id)
    except Exception as e:
        raise _job_error(address, job_id, e) from e
