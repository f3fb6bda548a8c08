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
import json
import os
import shlex
import sys
import time
from typing import Any, Callable

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
    return str(connect(address).get_job_status(job_id).value)


def logs(address: str | None, job_id: str) -> str:
    return connect(address).get_job_logs(job_id)


def follow(address: str | None, job_id: str, write: Callable[[str], Any] = sys.stdout.write) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    client = connect(address)

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(_tail())
    except Exception as e:  # the log stream can drop (e.g. head restarts); the status poll below still ends it
        write(f"[log stream ended: {type(e).__name__}: {e}]\n")
    return wait(address, job_id)


def wait(address: str | None, job_id: str, timeout_s: float = 3600.0) -> str:
    client = connect(address)
    deadline = time.time() + timeout_s
    while True:
        state = str(client.get_job_status(job_id).value)
        if state in TERMINAL or time.time() > deadline:
            return state
        time.sleep(0.5)


def stop(address: str | None, job_id: str) -> bool:
    return connect(address).stop_job(job_id)
