"""The learning-rate grid as parallel Ray Tune trials on the shared local Ray: best dev score kept, and
after a restart the finished trials are read back, only the unfinished one trains."""
import os
import shutil

import pytest

from pipelines import storage, typed_config
from pipelines.finetune import glue
from pipelines.finetune.jobs import FinetuneConfig, run_finetune_jobs

LRS = [1e-4, 1e-3]


def config() -> FinetuneConfig:
    small = {"num_epochs": 1, "batch_size": 8, "max_seq_length": 32, "max_train_examples": 48, "max_eval_examples": 40}
    return typed_config.from_dict(FinetuneConfig, {"parallel_trials": True, "tasks": [
        {"name": "movie_sentiment", "data_uri": glue.DEMO_TASK_DIR, "hyper_params": small, "learning_rates": LRS,
         "num_cpus": 1, "spec": {"name": "movie_sentiment", "text_a": "sentence", "labels": ["0", "1"]}}]})


@pytest.mark.slow
def test_lr_grid_as_tune_trials_and_restart(ray_session, tiny_checkpoint, tmp_path):
    out, lines = str(tmp_path / "ft"), []
    result = run_finetune_jobs(config(), tiny_checkpoint, out, log=lines.append)["tasks"]["movie_sentiment"]
    assert result["status"] == "done"
    assert "learning-rate trials: 2 to run in parallel (movie_sentiment@0.0001, movie_sentiment@0.001)" in lines
    assert sorted(result["sweep"]) == ["0.0001", "0.001"]
    assert result["score"] == max(result["sweep"].values())
    assert result["sweep"][f"{result['best_learning_rate']:g}"] == result["score"]
    task_dir = result["output_uri"]
    for lr in LRS:
        assert f"movie_sentiment: trial lr {lr:g} done, score {result['sweep'][f'{lr:g}']:.4f}" in lines

    # A restart after one trial had committed: the task's marker and the other trial are gone.
    os.remove(f"{task_dir}/result.json")
    shutil.rmtree(f"{task_dir}/lr_0.001")
    kept = {f: storage.read_bytes(f) for f in storage.list_files(task_dir)}
    lines.clear()
    again = run_finetune_jobs(config(), tiny_checkpoint, out, log=lines.append)["tasks"]["movie_sentiment"]
    assert "movie_sentiment: learning rate(s) 0.0001 done already, skipped" in lines
    assert "learning-rate trials: 1 to run in parallel (movie_sentiment@0.001)" in lines
    assert {f: storage.read_bytes(f) for f in kept} == kept  # finished trials not redone
    assert again["status"] == "done" and sorted(again["sweep"]) == ["0.0001", "0.001"]
    assert again["sweep"]["0.0001"] == result["sweep"]["0.0001"]
