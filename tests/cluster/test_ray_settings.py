"""cluster.ray_settings: a Ray started with its settings keeps an idle worker of another runtime_env
(as Ray Data's shuffle uses) for the next task, where Ray's default kills it after 1 s."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cluster.ray_settings import NODE_ENV, node_env_prefix, system_config, system_config_flag

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One CPU, so Ray's soft limit of idle workers is one: the plain task's worker fills it, and the
# other runtime_env's worker is above it while idle.
SCRIPT = """
import json, os, sys, time
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _system_config=json.loads(sys.argv[1]))
env = {"env_vars": {"BERT_TEST_OTHER_ENV": "1"}}
pid = ray.remote(lambda: os.getpid())
first = ray.get(pid.options(runtime_env=env).remote())
ray.get(pid.remote())
time.sleep(3)
print("SAME", ray.get(pid.options(runtime_env=env).remote()) == first)
"""


@pytest.mark.parametrize("config,kept", [(system_config(), True), ({}, False)], ids=["ours", "ray-default"])
def test_idle_worker_of_another_runtime_env_is_kept(config, kept):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"SAME {kept}" in out.stdout.splitlines()


def test_ray_cluster_yaml_head_gets_the_same_settings():
    with open(os.path.join(ROOT, "ray_cluster.yaml")) as f:
        text = f.read()
    flag = system_config_flag().replace("--system-config=", "")
    assert f"--system-config='{flag}'" in text
    starts = [line for line in text.splitlines() if "; " in line and "ray start" in line]
    assert len(starts) == 2 and all(f"; {node_env_prefix()} ray start " in line for line in starts)


WORKER_POOL = """
import json, sys
import ray
from cluster.ray_settings import use_node_env
use_node_env()
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote
def pools():
    import pyarrow as pa
    from pipelines import allocator
    plain = pa.default_memory_pool().backend_name  # what the process started with
    return plain, allocator.configure()["arrow_pool"]

print("POOLS", json.dumps(ray.get(pools.remote())))
"""


def test_a_ray_started_with_the_node_env_gives_its_workers_the_system_pool():
    """pyarrow's default pool (mimalloc) kept a freed block's pages in the worker; a Ray the pipeline
    starts hands its workers the system pool from their first allocation."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *NODE_ENV)}
    out = subprocess.run([sys.executable, "-c", WORKER_POOL], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "POOLS " + json.dumps(["system", "system"]) in out.stdout.splitlines()


def test_configure_sets_the_pool_where_the_environment_does_not():
    env = {k: v for k, v in os.environ.items() if k not in NODE_ENV}
    code = "import pyarrow as pa; from pipelines import allocator; print(pa.default_memory_pool().backend_name, " \
           "allocator.configure()['arrow_pool'])"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert plain.stdout.split() == ["mimalloc", "system"], plain.stderr[-2000:]
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**env, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"})
    assert chosen.stdout.split() == ["jemalloc", "jemalloc"], chosen.stderr[-2000:]  # the user's choice is kept


def test_a_started_ray_leaves_the_settings_as_they_were(ray_session):
    """``ray.init`` adds its session's spilling directory to the ``_system_config`` dict it is given
    (the test session's Ray got one from ``system_config()``); the next Ray must not inherit it."""
    import ray

    assert ray.is_initialized()
    assert system_config() == {"idle_worker_killing_time_threshold_ms": 60_000}
    assert system_config_flag() == '--system-config={"idle_worker_killing_time_threshold_ms":60000}'
