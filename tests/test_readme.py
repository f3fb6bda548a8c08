"""README.md, executed: every command of its ```bash blocks runs as written, in order, in a new folder, with
the installed ``bert-pipeline``; a command that cannot run on one machine is listed below with its reason.
A README command that is neither run nor listed fails the test, and so does a changed one that no longer
works. ``.ci/run`` runs this after the rest of the suite (marker ``readme``)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

NOT_RUN = {
    ".ci/run": "it runs this test",
    "ray up ray_cluster.yaml": "starts EC2 instances (AWS credentials and a bill)",
    "ray dashboard ray_cluster.yaml &": "tunnels to the cluster `ray up` made",
    "bert-pipeline submit pipelines/presets/base.yaml root=s3://BUCKET/runs/base": "a real bucket and a GPU cluster",
    "bert-pipeline submit --finetune s3://BUCKET/bert tasks.yaml root=s3://BUCKET/eval": "a real bucket and checkpoint",
    'pip install -e ".[test,bench]"': "the bench extras (HF datasets, accelerate): a benchmark set-up",
}
BENCHMARK = re.compile(r"^(python -m bench\.|bash bench/)")
"""Benchmarks take minutes to hours and are not tests; their smoke runs are in tests/bench/."""
SERVER = "python -m cluster.local"
"""Started in the background, as the README says (a second terminal), and stopped by its pid."""


def readme_commands() -> list[str]:
    """Each command line of the ```bash blocks, in order, without its trailing comment."""
    text = open(README, encoding="utf-8").read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_every_readme_command_is_run_or_listed_with_its_reason():
    commands = readme_commands()
    setup = "pip install torch==2.13.0 && pip install -c constraints.txt -e . && bert-pipeline"
    assert commands[0] == setup, "the README's first command is the set-up that .ci/run performs"
    assert set(NOT_RUN) <= set(commands), f"listed but gone from the README: {set(NOT_RUN) - set(commands)}"
    assert SERVER in commands and "bert-pipeline" in commands


def _run(command: str, cwd: str, env: dict, job: str | None = None, timeout: float = 1800) -> str:
    command = command.replace("JOB", job) if job else command
    out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"`{command}` exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stdout + out.stderr, f"`{command}` printed a traceback:\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _stage_keys(root: str, names: list[str]) -> dict[str, str]:
    with open(os.path.join(root, "manifest.json")) as f:
        stages = json.load(f)["stages"]
    return {n: stages[n]["stage_hash"] for n in names}


def _stage_bytes(root: str, names: list[str]) -> dict[str, dict[str, bytes]]:
    """Every committed file of each stage's output, by its path under the output."""
    with open(os.path.join(root, "manifest.json")) as f:
        stages = json.load(f)["stages"]
    out = {}
    for name in names:
        top = stages[name]["outputs"]["output"]
        out[name] = {os.path.relpath(os.path.join(d, f), top): open(os.path.join(d, f), "rb").read()
                     for d, _, files in os.walk(top) for f in files if f != "stats.json"}
    return out


def _stages() -> int:
    from pipelines.bert_dag import bert_pipeline

    return len(bert_pipeline().names())


def _check_demo(output: str, cwd: str) -> None:
    root = os.path.join(cwd, "runs", "demo")
    assert output.startswith(f"run demo at {root}: {_stages()} stage(s) to run"), output[:500]
    assert "\nresults table: " in output and "| task " in output, output[-3000:]
    log = re.search(r"Ray's logs: (\S+)", output.splitlines()[0]).group(1)
    text = open(log, encoding="utf-8", errors="replace").read()
    assert "\x1b[" not in text, "the log file holds terminal colour codes"
    # Ray Train's placement-group cleaner (Ray's own thread) fails to connect when another Ray runs on the same
    # machine (a test session's): not the run's, and a person with one Ray never sees it
    ours = [line for line in text.splitlines() if "(PlacementGroupCleaner" not in line]
    assert not [line for line in ours if "Traceback" in line], "\n".join(ours[-40:])


def _check_rerun(output: str, cwd: str) -> None:
    assert output.startswith(f"run demo at {cwd}/runs/demo: 0 stage(s) to run (none), {_stages()} done"), output[:500]
    assert output.count("done already, skipped") == _stages()


def _start_server(cwd: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(["bash", "-c", f"exec {SERVER}"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 180
    for line in proc.stdout:
        if line.startswith("Ray job server at http://127.0.0.1:8265"):
            return proc
        assert time.time() < deadline and proc.poll() is None, f"the job server did not start: {line}"
    raise AssertionError(f"the job server exited with {proc.wait()}")


def _stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a person stops it; it stops its own Ray head's process group."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.readme
def test_readme_commands_run_as_written(tmp_path):
    assert shutil.which("bert-pipeline"), "bert-pipeline is not installed (pip install -e .)"
    cwd = str(tmp_path / "newuser")
    os.makedirs(cwd)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "PYTEST"))}
    server = None
    job = None
    local_data_keys = None
    try:
        commands = readme_commands()
        for i, command in enumerate(commands):
            if command in NOT_RUN or BENCHMARK.match(command):
                continue
            if i == 0:  # the set-up: .ci/run has installed the package; its last command runs the demo
                command = command.rsplit("&&", 1)[1].strip()
            if command == SERVER:
                server = _start_server(cwd, env)
                continue
            output = _run(command, cwd, env, job)
            if i == 0:
                _check_demo(output, cwd)
            elif command == "bert-pipeline":
                _check_rerun(output, cwd)
            elif command.startswith("bert-pipeline status runs/demo"):
                assert output.startswith(f"run at {cwd}/runs/demo (config ")
            elif "root=runs/data --until wordpiece" in command:
                local_data_keys = _stage_keys(f"{cwd}/runs/data", ["read", "clean", "near_dedup", "split", "wordpiece"])
            elif command.startswith("bert-pipeline submit") and "--until wordpiece" in command:
                assert f"(run root {cwd}/runs/submitted)" in output and "job " in output and ": SUCCEEDED" in output
                # the job ran in a package folder on the cluster, and still gives the local run's keys and bytes
                assert _stage_keys(f"{cwd}/runs/submitted", list(local_data_keys)) == local_data_keys
                assert (_stage_bytes(f"{cwd}/runs/submitted", list(local_data_keys))
                        == _stage_bytes(f"{cwd}/runs/data", list(local_data_keys)))
            elif "--no-follow" in command:
                job = re.search(r"submitted job (\S+) to", output).group(1)
            elif command.startswith("bert-pipeline stop"):
                assert re.search(rf"job {job}: (stop requested|already finished); now (STOPPED|SUCCEEDED|FAILED)", output)
        assert server is not None and job is not None and local_data_keys is not None
    finally:
        if server is not None:
            _stop_server(server)
