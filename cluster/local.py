"""Local Ray heads for tests and laptops: a plain head with the Jobs API, or an autoscaling fake cluster.

    python -m cluster.local            # a job server for `bert-pipeline submit` on http://127.0.0.1:8265;
                                       # Ctrl-C stops it (and only it)

``LocalHead`` runs ``ray start --head --block`` in its own process group on 127.0.0.1 with its own
ports and temp dir, and stops by signalling that group only, so other Ray instances on the machine
(a test session's ``ray.init``, another engineer's cluster) are left alone. ``ray stop`` and
``AutoscalingCluster.start()`` would end every Ray on the machine.

``fake_autoscaling_config`` is the autoscaler config for Ray's fake multi-node provider: a head with
0 CPUs and the same two worker types as ``ray_cluster.yaml`` (CPU workers for Data stages, GPU
workers for training), min 0, so a pipeline's resource requests make the autoscaler launch
worker "nodes" (extra raylets on this machine) and terminate them when idle.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

import yaml

from cluster.ray_settings import NODE_ENV, system_config_flag


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_uses_token_auth(env: dict[str, str]) -> bool:
    """Whether ``ray start --head`` run with ``env`` turns token auth on (Ray 2.60's rule)."""
    mode = env.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    path = env.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return bool(env.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def fake_autoscaling_config(gcs_port: int, cpu_workers_max: int = 2, gpu_workers_max: int = 1,
                            idle_timeout_minutes: float = 0.1) -> dict[str, Any]:
    """Fake multi-node autoscaler config mirroring ray_cluster.yaml's node types at laptop size."""
    empty: dict[str, Any] = {}
    return {
        "cluster_name": "fake-bert-pipeline",
        "max_workers": cpu_workers_max + gpu_workers_max,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            # Worker raylets join this head's GCS (the provider assumes port 6379 otherwise).
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0,
                           "max_workers": cpu_workers_max},
            "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
                           "max_workers": gpu_workers_max},
        },
        "auth": empty, "docker": empty, "file_mounts": empty, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class LocalHead:
    """A Ray head on 127.0.0.1 owned by this object (see module docstring)."""

    def __init__(self, num_cpus: int = 1, autoscaling_config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, dashboard_port: int | None = None):
        self.port = free_port()
        self.dashboard_port = dashboard_port or free_port()
        # The job agent's HTTP port defaults to 52365 for every Ray on the machine; when another Ray
        # holds it the agent runs without HTTP, never registers, and every job submission times out.
        self.agent_port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: Ray's socket paths have a limit
        self.num_cpus = num_cpus
        self.autoscaling_config = autoscaling_config
        # Ray's own rule for `ray start`: token auth is on when RAY_AUTH_MODE=token, or when it is unset
        # and a token exists (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN); the head and the
        # clients on this machine then share that token.
        self.env = {**NODE_ENV, **os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.token_auth = head_uses_token_auth(self.env)
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.tmp, "ray-start.log")

    @classmethod
    def fake_autoscaling(cls, **config_kwargs: Any) -> "LocalHead":
        """A 0-CPU head whose autoscaler launches fake worker nodes (see fake_autoscaling_config)."""
        head = cls(num_cpus=0, env={"RAY_FAKE_CLUSTER": "1"})
        head.autoscaling_config = fake_autoscaling_config(head.port, **config_kwargs)
        return head

    @property
    def address(self) -> str:
        """The GCS address, for ``ray.init(address=...)``."""
        return f"127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a driver process that connects to this head (sends the shared token when
        the head has token auth; asking for token auth from a head without it finds no token)."""
        env = dict(os.environ, RAY_ADDRESS=self.address)
        if self.token_auth:
            env["RAY_AUTH_MODE"] = "token"
        return env

    @property
    def dashboard_url(self) -> str:
        """The Jobs API address, for ``bert-pipeline submit --address``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 90.0) -> "LocalHead":
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               f"--port={self.port}", f"--num-cpus={self.num_cpus}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--dashboard-agent-listen-port={self.agent_port}",
               f"--temp-dir={self.tmp}", "--disable-usage-stats", system_config_flag()]
        if self.autoscaling_config is not None:
            path = os.path.join(self.tmp, "autoscaling.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(self.autoscaling_config, f)
            cmd.append(f"--autoscaling-config={path}")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.tail_log()}")
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2) as r:
                    json.loads(r.read())
                    return self
            except urllib.error.HTTPError:  # e.g. 401 under Ray's token auth: the server is up
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Ray head did not answer on {self.dashboard_url} within {timeout_s}s:\n{self.tail_log()}")

    def tail_log(self, num_bytes: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-num_bytes:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 3.0) -> None:
        """Signal this head's process group only: SIGTERM, then SIGKILL (a head drains for 30 s
        on SIGTERM; nothing here needs draining)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait_s
            while time.time() < deadline:
                self.proc.poll()  # reap the leader so a zombie does not count as alive
                if not _group_alive(pgid):
                    break
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> "LocalHead":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv: list[str] | None = None) -> int:
    """A job server on this machine, in the foreground, until Ctrl-C (or SIGTERM)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m cluster.local",
                                description="A local Ray head with the Jobs API, for `bert-pipeline submit`.")
    p.add_argument("--port", type=int, default=8265, help="the dashboard / Jobs API port on 127.0.0.1")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    with socket.socket() as probe:  # another server there would answer the readiness check in its place
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            print(f"python -m cluster.local: error: port {args.port} on 127.0.0.1 is in use (a job server may be "
                  "running already: `bert-pipeline submit` will use it); choose another with --port",
                  file=sys.stderr)
            return 2
    head = LocalHead(num_cpus=args.num_cpus, dashboard_port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        head.start()
        print(f"Ray job server at {head.dashboard_url} ({args.num_cpus} CPUs; Ray's logs under {head.tmp}); "
              "Ctrl-C stops it", flush=True)
        while head.proc is not None and head.proc.poll() is None:
            time.sleep(0.5)
        print(f"the Ray head exited:\n{head.tail_log()}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(f"python -m cluster.local: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        print("stopping the job server", flush=True)
        return 0
    finally:
        head.stop()


if __name__ == "__main__":
    sys.exit(main())
