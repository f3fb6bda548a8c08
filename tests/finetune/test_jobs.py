"""All tasks in parallel on the shared local Ray: results table, failure isolation, re-run skipping."""
import json
import os

import pytest

from pipelines import typed_config
from pipelines.finetune import glue
from pipelines.finetune.jobs import FinetuneConfig, TaskJob, run_finetune_jobs

STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    (root / "STS-B").mkdir()
    rows = "".join(f"{i}\tg\tf\t2012\t{i}\tnone\tnone\tA man plays {i}.\tA man is playing {i}.\t{i % 6}.0\n"
                   for i in range(24))
    for split in ("train.tsv", "dev.tsv"):
        (root / "STS-B" / split).write_text(STSB_HEADER + rows)
    (root / "STS-B" / "test.tsv").write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                                             "sentence2\n0\tg\tf\t2012\t0\tnone\tnone\tA cat.\tA dog.\n")
    return str(root)


def make_config(glue_root):
    small = {"num_epochs": 1, "batch_size": 8, "max_seq_length": 32, "max_train_examples": 48, "max_eval_examples": 40}
    return typed_config.from_dict(FinetuneConfig, {
        "glue_root": glue_root,
        "tasks": [
            {"name": "stsb", "hyper_params": small, "learning_rates": [5e-5, 1e-4], "num_cpus": 1},
            {"name": "movie_sentiment", "data_uri": glue.DEMO_TASK_DIR, "hyper_params": small, "num_cpus": 1,
             "scratch_baseline": True, "spec": {"name": "movie_sentiment", "text_a": "sentence", "labels": ["0", "1"]}},
            {"name": "rte", "data_uri": os.path.join(glue_root, "missing"), "num_cpus": 1},
        ]})


def test_parallel_jobs_table_failure_and_rerun(ray_session, tiny_checkpoint, glue_root, tmp_path):
    cfg = make_config(glue_root)
    out = str(tmp_path / "ft")
    summary = run_finetune_jobs(cfg, tiny_checkpoint, out)
    tasks = summary["tasks"]
    assert [tasks[n]["status"] for n in ("stsb", "movie_sentiment", "rte")] == ["done", "done", "failed"]
    assert "FileNotFoundError" in tasks["rte"]["error"] and summary["num_failed"] == 1
    assert set(tasks["stsb"]["dev"]["stsb"]) == {"pearson", "spearman"}
    assert set(tasks["stsb"]["sweep"]) == {"5e-05", "0.0001"}
    assert summary["glue_tasks"] == ["stsb"] and summary["glue_score"] == pytest.approx(tasks["stsb"]["score"])
    stsb_dir = tasks["stsb"]["output_uri"]
    submission = open(f"{stsb_dir}/lr_{tasks['stsb']['best_learning_rate']:g}/glue_submission/STS-B.tsv").read()
    assert submission.startswith("index\tprediction\n0\t")
    assert os.path.exists(f"{stsb_dir}/result.json") and os.path.exists(f"{tasks['rte']['output_uri']}/error.txt")
    table = open(f"{out}/results.md").read()
    assert "| stsb | done |" in table and "| rte | failed |" in table and "GLUE score (1 of 9 tasks" in table
    scratch = tasks["movie_sentiment"]["scratch"]  # the same fine-tuning from random init, its own files
    assert set(scratch) == {"score", "dev", "seconds_per_epoch", "learning_rate"} and scratch["learning_rate"] == 3e-5
    assert os.path.exists(f"{tasks['movie_sentiment']['output_uri']}/scratch/lr_3e-05/metrics.json")
    accuracy = scratch["dev"]["movie_sentiment"]["accuracy"]
    assert (f"| movie_sentiment (from scratch) | done | movie_sentiment: accuracy {accuracy:.4g} "
            f"| {scratch['score']:.4f} | 3e-05 |") in table
    assert json.load(open(f"{out}/results.json"))["num_failed"] == 1

    again = run_finetune_jobs(cfg, tiny_checkpoint, out)["tasks"]
    assert [again[n]["status"] for n in ("stsb", "movie_sentiment", "rte")] == ["skipped", "skipped", "failed"]
    assert again["stsb"]["score"] == tasks["stsb"]["score"]
    assert again["movie_sentiment"]["scratch"] == tasks["movie_sentiment"]["scratch"]


def test_config_rejects_unknown_task_and_duplicates():
    with pytest.raises(ValueError, match="neither a GLUE task"):
        TaskJob(name="imdb")
    with pytest.raises(ValueError, match="'squad_v1': scratch_baseline is for GLUE-format tasks"):
        TaskJob(name="squad_v1", scratch_baseline=True)
    with pytest.raises(ValueError, match="unique"):
        FinetuneConfig(tasks=(TaskJob(name="rte"), TaskJob(name="rte")))
    with pytest.raises(typed_config.ConfigError, match="tasks\\[0\\].hyper_params"):
        typed_config.from_dict(FinetuneConfig, {"tasks": [{"name": "rte", "hyper_params": {"lr": 1}}]})


def test_demo_config_is_a_valid_custom_task():
    from pipelines.finetune.config import demo_config

    cfg = demo_config(num_epochs=1, max_train_examples=64)
    (job,) = cfg.tasks
    assert job.spec == glue.DEMO_TASK and job.hyper_params.num_epochs == 1
    assert os.path.exists(os.path.join(job.data_uri, "train.tsv"))
    assert typed_config.from_dict(FinetuneConfig, typed_config.to_dict(cfg)) == cfg
