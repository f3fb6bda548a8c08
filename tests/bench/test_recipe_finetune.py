"""bench.recipe_finetune's pure helpers, no fine-tuning: the NAME=PATH exports, held-out losses read from
bench.learning reports, mean and sd, the markdown table (exact), and merging two runs of the bench."""
from __future__ import annotations

import pytest

from bench import recipe_finetune as R


def _run(task, row, seed, acc, seconds=10.0, load=1.0):
    return {"task": task, "row": row, "seed": seed, "dev_accuracy": acc, "seconds": seconds,
            "load_before": [load, 2.0, 3.0], "load_after": [load, 2.0, 3.0]}


def test_parse_exports_keeps_order_and_rejects_bad_names():
    assert R.parse_exports(["b=/x/b", "a=/x/a=1"]) == {"b": "/x/b", "a": "/x/a=1"}
    assert list(R.parse_exports(["b=/x/b", "a=/x/a"])) == ["b", "a"]
    for bad in (["nopath"], ["=/x"], ["a="], ["a=/x", "a=/y"], ["scratch=/x"]):
        with pytest.raises(ValueError):
            R.parse_exports(bad)


def test_heldout_losses_match_exports_by_path():
    reports = [{"order": ["ours-padded", "hf"], "ours-padded": {"export": "/r/pad/export", "heldout_mlm_loss": 6.0},
                "hf": {"heldout_mlm_loss": 5.99}},  # no export: not matched
               {"order": ["hf"], "hf": {"export": "/r/hf/export/", "heldout_mlm_loss": 5.98}}]
    got = R.heldout_losses(reports, {"padded": "/r/pad/./export", "hf": "/r/hf/export", "other": "/r/o"})
    assert got == {"padded": 6.0, "hf": 5.98, "other": None}


def test_summarize_mean_and_sample_sd():
    assert R.summarize([50.0, 52.0, 54.0]) == {"n": 3, "mean": 52.0, "sd": 2.0}
    assert R.summarize([61.5]) == {"n": 1, "mean": 61.5, "sd": 0.0}


def test_majority_accuracy():
    assert R.majority_accuracy(["a", "b", "a", "a"]) == 0.75


def test_task_table_exact():
    runs = [{**_run("demo", "packed", 0, 0.671, 60, 3.5), "cpu_seconds": 20.0},
            {**_run("demo", "packed", 1, 0.681, 70, 1.25), "cpu_seconds": 23.0},
            _run("demo", "scratch", 0, 0.5, 40, 2.0), _run("rte", "packed", 0, 0.9)]
    table = R.task_table("demo", runs, ["packed", "hf", "scratch"], [0, 1], {"packed": 5.8683, "scratch": None})
    assert table == (
        "| recipe | held-out MLM loss | dev acc seed 0 | dev acc seed 1 | mean +- sd | s per run (CPU s) | "
        "1-min load before runs |\n"
        "|---|---|---|---|---|---|---|\n"
        "| packed | 5.868 | 67.10 | 68.10 | 67.60 +- 0.71 | 65 (22) | 1.25-3.50 |\n"
        "| scratch |  | 50.00 |  | 50.00 +- 0.00 | 40 | 2.00-2.00 |")


def _report(rows, exports, runs, losses, load):
    return {"settings": {"exports": exports, "tasks": ["demo"], "seeds": [0], "rows": rows, "rte_epochs": 3,
                         "rte_max_seq": 128, "threads": 1},
            "heldout_mlm_loss": losses, "runs": runs,
            "tasks": {"demo": {"spec": "movie_sentiment", "train_rows": 8908, "dev_rows": 1164,
                               "majority_dev_accuracy": 0.5026,
                               "hyper_params": {"learning_rate": 5e-4, "batch_size": 32, "num_epochs": 3,
                                                "max_seq_length": 64, "max_train_examples": 2000},
                               "load_average_start": [load, load, load], "load_average_end": [load + 1] * 3}}}


def test_merge_puts_scratch_last_and_keeps_every_part_load():
    a = _report(["padded", "scratch"], {"padded": "/p"},
                [_run("demo", "padded", 0, 0.6), _run("demo", "scratch", 0, 0.5)], {"padded": 6.0}, 1.0)
    b = _report(["hf"], {"hf": "/h"}, [_run("demo", "hf", 0, 0.62)], {"hf": 5.99}, 2.0)
    merged = R.merge_reports([a, b])
    assert merged["settings"]["rows"] == ["padded", "hf", "scratch"]
    assert merged["settings"]["exports"] == {"padded": "/p", "hf": "/h"}
    assert merged["heldout_mlm_loss"] == {"padded": 6.0, "hf": 5.99}
    assert len(merged["runs"]) == 3
    assert R.markdown(merged) == (
        "**demo** (movie_sentiment: 8908 train rows, 1164 dev rows, commonest label 50.26%; lr 0.0005, batch 32, "
        "3 epochs, 64 tokens, first 2000 train rows; load average (1/5/15 min) 1.00/1.00/1.00 at the start, "
        "2.00/2.00/2.00 at the end; 2.00/2.00/2.00 at the start, 3.00/3.00/3.00 at the end)\n\n"
        "| recipe | held-out MLM loss | dev acc seed 0 | mean +- sd | s per run (CPU s) | 1-min load before runs |\n"
        "|---|---|---|---|---|---|\n"
        "| padded | 6.000 | 60.00 | 60.00 +- 0.00 | 10 | 1.00-1.00 |\n"
        "| hf | 5.990 | 62.00 | 62.00 +- 0.00 | 10 | 1.00-1.00 |\n"
        "| scratch |  | 50.00 | 50.00 +- 0.00 | 10 | 1.00-1.00 |\n")


def test_merge_refuses_different_hyper_parameters():
    a = _report(["padded"], {"padded": "/p"}, [], {}, 1.0)
    b = _report(["hf"], {"hf": "/h"}, [], {}, 1.0)
    b["tasks"]["demo"]["hyper_params"] = {**b["tasks"]["demo"]["hyper_params"], "num_epochs": 2}
    with pytest.raises(ValueError):
        R.merge_reports([a, b])
