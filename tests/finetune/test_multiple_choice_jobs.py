"""Multiple-choice tasks through the finetune stage's path (run_finetune_jobs on the shared local Ray) and
``bert-pipeline finetune``'s checks, on a few rows of the real CommonsenseQA and COPA files."""
import json
import os

import pytest

from pipelines import typed_config
from pipelines.finetune import command
from pipelines.finetune.config import FinetuneConfig, TaskJob, task_output_uri
from pipelines.finetune.jobs import run_finetune_jobs


def test_tasks_known_by_name_and_custom_spec():
    assert TaskJob(name="copa").is_multiple_choice and TaskJob(name="commonsenseqa").choice_spec.num_choices == 5
    with pytest.raises(ValueError, match="set at most one of spec, squad, ner and multiple_choice"):
        typed_config.from_dict(TaskJob, {"name": "quiz", "squad": {}, "multiple_choice": {
            "name": "quiz", "context": ["q"], "choices": ["a", "b"], "num_choices": 2}})
    with pytest.raises(ValueError, match="the spec's name is 'other'"):
        typed_config.from_dict(TaskJob, {"name": "quiz", "multiple_choice": {
            "name": "other", "context": ["q"], "choices": ["a", "b"], "num_choices": 2}})
    with pytest.raises(ValueError, match="task swag: set data_uri or swag_root"):
        command.check_task_files(FinetuneConfig(tasks=(TaskJob(name="swag"),)))


def test_finetune_command_refuses_a_file_with_another_choice_count_before_training(tmp_path):
    row = {"q": "Which is even?", "opts": ["1", "2", "3"], "label": 1}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "opts": ["1", "2"]}) + "\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps(row) + "\n")
    cfg = typed_config.from_dict(FinetuneConfig, {"tasks": [{"name": "odd", "data_uri": str(tmp_path), "multiple_choice": {
        "name": "odd", "context": ["q"], "choice_list": "opts", "num_choices": 3}}]})
    with pytest.raises(command.BadInputError, match=r"train\.jsonl:2: field 'opts' has 2 choices, task odd has 3"):
        command.check_task_files(cfg)
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    command.check_task_files(cfg)
    os.remove(tmp_path / "dev.jsonl")
    with pytest.raises(command.BadInputError, match=r"dev\.jsonl: missing \(task odd reads dev\.jsonl"):
        command.check_task_files(cfg)


def test_a_tasks_results_folder_is_named_by_its_identity_without_its_resources():
    """One identity rule for tasks and runs: resources (num_cpus, num_gpus) are not identity, so a task
    moved to a GPU, or given more CPUs, finds its finished results."""
    assert task_output_uri("/o", TaskJob(name="rte"), "ck") == "/o/rte/f6de426885bca460"
    assert task_output_uri("/o", TaskJob(name="rte", num_cpus=4, num_gpus=0.5), "ck") == "/o/rte/f6de426885bca460"
    assert task_output_uri("/o", TaskJob(name="rte", learning_rates=(1e-5,)), "ck") != "/o/rte/f6de426885bca460"


def test_commonsenseqa_and_copa_jobs_on_real_rows(ray_session, minilm_dir, shared_data, tmp_path):
    small = {"num_epochs": 1, "batch_size": 8, "max_seq_length": 48, "max_train_examples": 16,
             "max_eval_examples": 24, "learning_rate": 5e-5}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"q": "2 + 2?", "a": "4", "b": "5", "label": 0}) + "\n"
                                     + json.dumps({"q": "1 + 1?", "a": "2", "label": 0}) + "\n")
    (bad / "dev.jsonl").write_text(json.dumps({"q": "3 + 3?", "a": "6", "b": "7", "label": 0}) + "\n")
    quiz = {"name": "quiz", "context": ["q"], "choices": ["a", "b"], "num_choices": 2}
    cfg = typed_config.from_dict(FinetuneConfig, {
        "commonsenseqa_root": f"{shared_data}/commonsenseqa", "copa_root": f"{shared_data}/superglue/COPA",
        "tasks": [{"name": "commonsenseqa", "hyper_params": small}, {"name": "copa", "hyper_params": small},
                  {"name": "quiz", "data_uri": str(bad), "multiple_choice": quiz, "hyper_params": small}]})
    command.check_task_files(cfg)  # a missing choice is a bad row, counted
    out = str(tmp_path / "ft")
    summary = run_finetune_jobs(cfg, minilm_dir, out)
    tasks = summary["tasks"]
    assert [tasks[n]["status"] for n in ("commonsenseqa", "copa", "quiz")] == ["done", "done", "done"]
    csqa = tasks["commonsenseqa"]
    assert set(csqa["dev"]["commonsenseqa"]) == {"accuracy"}
    assert csqa["score"] == pytest.approx(100 * csqa["dev"]["commonsenseqa"]["accuracy"])
    assert [r["num_rows"] for r in csqa["data_reports"]] == [9741, 1221]
    assert [r["bad_by_reason"] for r in csqa["data_reports"]] == [{"duplicated choice text": 122},
                                                                   {"duplicated choice text": 24}]
    assert tasks["quiz"]["data_reports"][0]["bad_by_reason"] == {"missing choice": 1}
    lines = open(os.path.join(tasks["copa"]["output_uri"], "lr_5e-05", "dev_predictions", "copa.tsv")).read().splitlines()
    assert lines[0] == "id\tprediction\tlabel" and len(lines) == 25
    assert lines[1].startswith(f"{shared_data}/superglue/COPA/val.jsonl:1\t") and lines[1].endswith("\t1")
    table = open(f"{out}/results.md").read()
    acc = csqa["dev"]["commonsenseqa"]["accuracy"]
    assert f"| commonsenseqa | done | commonsenseqa: accuracy {acc:.4g} | {csqa['score']:.4f} | 5e-05 |" in table
    assert "| copa | done |" in table and "| quiz | done |" in table and summary["glue_score"] is None
