"""Where an interrupted pretraining stage picks up: the newest complete checkpoint under a run root, read
from storage alone (no Ray, no workers), for the console's "interrupted" and "resuming" lines.

    resume_point("runs/demo")   # -> "phase 0 step 150", "the start of phase 1", or None (nothing saved)
"""
from __future__ import annotations

import re

from pipelines import storage

_CHECKPOINT = re.compile(r"/phase(\d+)-step(\d+)/")
_EXPORT = re.compile(r"/phase(\d+)/export/")
SNAPSHOT = "checkpoint_manager_snapshot.json"
"""Ray Train's record of the checkpoints it committed, in each phase's run folder."""


def resume_point(root: str) -> str | None:
    """The checkpoint the next run restores: the newest one Ray Train committed (its snapshot), else the
    newest complete one, of the first phase not exported yet; its start when it has none; None when nothing
    of pretraining is saved."""
    from pipelines.pretrain.checkpointing import incomplete_parts

    base = storage.join(root, "pretrain")
    if not storage.is_dir(base):
        return None
    files = storage.list_files(base)
    exported = {int(m.group(1)) for f in files if (m := _EXPORT.search(f))}
    phase = 0
    while phase in exported:
        phase += 1
    committed = _committed_steps([f for f in files if f.endswith(f"-phase{phase}/{SNAPSHOT}")])
    if committed:  # Ray Train restores the newest checkpoint its snapshot lists
        return f"phase {phase} step {max(committed)}"
    candidates: dict[tuple[int, int], str] = {}
    for f in files:
        m = _CHECKPOINT.search(f)
        if m and int(m.group(1)) == phase:
            candidates[(phase, int(m.group(2)))] = f[: m.end() - 1]
    for (_, step), uri in sorted(candidates.items(), reverse=True):
        if not incomplete_parts(uri):
            return f"phase {phase} step {step}"
    return f"the start of phase {phase}" if exported else None


def _committed_steps(snapshots: list[str]) -> list[int]:
    steps = []
    for uri in snapshots:
        try:
            results = storage.read_json(uri).get("checkpoint_results", [])
        except (OSError, ValueError):
            continue
        steps += [int(r["metrics"]["step"]) for r in results if "step" in (r.get("metrics") or {})]
    return steps
