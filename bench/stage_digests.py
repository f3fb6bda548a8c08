"""Each data stage's key and the sha256 of its data files, for the demo config on a given corpus: run at two
commits to check that a change kept every stage's identity and bytes.

    python -m bench.stage_digests --corpus /tmp/corpus --root /tmp/digests-new
    PYTHONPATH=/path/to/other/checkout python bench/stage_digests.py --corpus /tmp/corpus --root /tmp/digests-old

The corpus is given as a plain path (a ``demo:`` input names the installed folder in older commits' rows).
Near-duplicate removal is switched off where the config has it, so a commit without that stage compares.
"""
from __future__ import annotations

import argparse
import hashlib
import json

from pipelines import storage
from pipelines.presets import load_run_config

STAGES = ("read", "clean", "split", "wordpiece", "tokenize", "nsp_pairs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a folder or glob of text files")
    ap.add_argument("--root", required=True, help="a new run root")
    args = ap.parse_args()
    overrides = [f"root={args.root}", f"data.inputs=[{args.corpus}]"]
    try:
        from pipelines.bert_dag import run_until
        overrides.append("data.near_dedup.enabled=false")
    except ImportError:  # before the DAG held run_until
        from pipelines.run_config import run_until
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    outputs = run_until(load_run_config("demo", overrides), "nsp_pairs", log=lambda line: None)
    report = {}
    for stage in STAGES:
        for name, uri in sorted(outputs[stage].items()):
            listed = storage.list_files(uri) if storage.is_dir(uri) else [uri]
            files = [f for f in listed if f.endswith((".parquet", ".txt", ".json"))
                     and not f.endswith(("manifest.json", "stats.json"))]
            digest = hashlib.sha256(b"".join(storage.read_bytes(f) for f in files)).hexdigest()[:16]
            report[f"{stage}.{name}"] = {"key": uri.rstrip("/").rsplit("/", 1)[-1], "files": len(files), "sha256": digest}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
