"""The floor plan holds (ARCHITECTURE.md, .importlinter): imports only run downwards, bert_core and the data
stages stay free of what they must not import, and planning a run imports no torch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint(cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=cwd)
    return subprocess.run([shutil.which("lint-imports") or "lint-imports", "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


@pytest.mark.parametrize("module, upward", [
    ("pipelines/storage.py", "from pipelines import dag"),          # ground -> engine
    ("pipelines/stages/split.py", "from pipelines import run_config"),  # work -> schema
    ("pipelines/stages/tokenize.py", "import torch"),                 # a data stage -> torch
])
def test_an_upward_or_forbidden_import_breaks_the_check(tmp_path, module, upward):
    for name in ("pipelines", "bert_core", "cluster"):
        shutil.copytree(os.path.join(REPO, name), tmp_path / name, ignore=shutil.ignore_patterns("demo", "__pycache__"))
    shutil.copy(os.path.join(REPO, ".importlinter"), tmp_path / ".importlinter")
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{upward}  # deliberate\n")
    out = _lint(str(tmp_path))
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout[-2000:]


PLANNING = textwrap.dedent("""
    import json, os, sys
    from pipelines.cli import main
    from pipelines.bert_dag import bert_pipeline, checked_plan
    from pipelines.presets import load_run_config
    root = sys.argv[1]
    cfg = load_run_config("demo", [f"root={root}"])
    plan = checked_plan(bert_pipeline(), cfg, until="wordpiece")           # run --until wordpiece's planning
    codes = [main(["status", root]),                                        # status of a run root
             main(["submit", "demo", f"root={root}", "--until", "wordpiece",   # submit's planning, up to
                   "--address", "http://127.0.0.1:" + sys.argv[2]])]           # the unreachable job server
    print(json.dumps({"torch": "torch" in sys.modules, "plan": plan[0], "codes": codes}))
""")


def test_planning_status_and_submit_import_no_torch(tmp_path):
    import json

    from cluster.local import free_port
    from pipelines import storage

    root = str(tmp_path / "run")
    storage.write_json_atomic(f"{root}/manifest.json", {"version": 1, "config_hash": "x", "config": {},
                                                         "created": 0.0, "stages": {}})
    out = subprocess.run([sys.executable, "-c", PLANNING, root, str(free_port())], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "plan": ["read", "clean", "near_dedup", "split", "wordpiece"], "codes": [0, 2]}, \
        out.stderr[-2000:]
    assert "cannot reach a Ray cluster" in out.stderr
