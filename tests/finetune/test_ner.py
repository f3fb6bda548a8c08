"""Token classification: first-sub-word labels, truncation, the NER job end to end, the results table."""
import json
import os

import pytest

from pipelines import typed_config
from pipelines.finetune import config, conll, ner
from pipelines.finetune.conll import ConllParams, Sentence
from pipelines.finetune.jobs import FinetuneConfig, run_finetune_jobs, summarize
from pipelines.report import results_markdown
from pipelines.finetune.train import load_tokenizer

LABELS = conll.labels(ConllParams())


def test_labels_on_first_sub_word_and_words_cut_or_empty(minilm_dir):
    tok = load_tokenizer(minilm_dir)
    s = Sentence(("EU", "rejects", "U.S.", "\x00", "lamb"), ("B-ORG", "O", "B-LOC", "O", "O"), 1, 0)
    full = ner.encode_sentences(tok, [s], LABELS, 128)
    # U.S. is four pieces (u . s .); the control character gives none
    assert full.rows.input_ids == [[101, 7327, 19164, 1057, 1012, 1055, 1012, 12559, 102]]
    assert full.piece_labels == [[-100, 3, 0, 5, -100, -100, -100, 0, -100]]
    assert full.first_piece == [[1, 2, 3, -1, 7]]
    assert (full.num_truncated_words, full.num_empty_words) == (0, 1)
    cut = ner.encode_sentences(tok, [s], LABELS, 6)  # [CLS] + 4 pieces + [SEP]: "lamb" is cut
    assert cut.rows.input_ids == [[101, 7327, 19164, 1057, 1012, 102]]
    assert cut.piece_labels == [[-100, 3, 0, 5, -100, -100]] and cut.first_piece == [[1, 2, 3, -1, -1]]
    assert (cut.num_truncated_words, cut.num_empty_words) == (1, 1)
    batch = ner.token_batch(cut, [0, 0], tok.pad_id)
    assert batch["labels"].tolist() == cut.piece_labels * 2 and batch["attention_mask"].sum().item() == 12


TRAIN = "".join(f"-DOCSTART- -X- -X- O\n\n{a} NNP B-NP B-PER\nvisited VBD B-VP O\n{b} NNP B-NP B-LOC\n. . O O\n\n"
                f"{c} NNP B-NP B-ORG\nInc NNP I-NP I-ORG\nsaid VBD B-VP O\n\n"
                for a, b, c in [("Peter", "Paris", "Acme"), ("Maria", "Berlin", "Globex"), ("John", "Rome", "Initech"),
                                ("Anna", "Madrid", "Umbrella")])


def test_ner_job_results_row_and_predictions_file(ray_session, tiny_checkpoint, tmp_path):
    data = tmp_path / "conll"
    data.mkdir()
    (data / "train.txt").write_text(TRAIN)
    (data / "valid.txt").write_text(TRAIN)
    small = {"num_epochs": 2, "batch_size": 4, "max_seq_length": 16, "learning_rate": 1e-3}
    cfg = typed_config.from_dict(FinetuneConfig, {"conll_root": str(data), "tasks": [
        {"name": "conll2003", "hyper_params": small},
        {"name": "conll_iob1", "hyper_params": small,
         "ner": {"scheme": "iob1", "train_file": "train.txt", "dev_file": "valid.txt"}}]})
    summary = run_finetune_jobs(cfg, tiny_checkpoint, str(tmp_path / "ft"))
    r, bad = summary["tasks"]["conll2003"], summary["tasks"]["conll_iob1"]
    assert r["status"] == "done" and bad["status"] == "failed"
    assert "SchemeError" in bad["error"] and f"{data}/train.txt: declared iob1" in bad["error"]
    dev = r["dev"]["conll2003"]
    assert set(dev) == {"entity_precision", "entity_recall", "entity_f1"} and r["score"] == 100 * dev["entity_f1"]
    assert r["dev_detail"]["conll2003"]["num_gold"] == 12
    assert [rep["num_kept"] for rep in r["data_reports"]] == [8, 8]
    table = open(tmp_path / "ft" / "results.md").read()
    f1s = ", ".join(f"{k} {v:.4g}" for k, v in dev.items())
    assert f"| conll2003 | done | conll2003: {f1s} | {r['score']:.4f} | 0.001 |" in table
    assert "- conll2003 (dev) entity F1 by type: LOC " in table and "| conll_iob1 | failed |" in table
    assert "; 0 words past max_seq_length and 0 without a WordPiece are predicted O and scored\n" in table
    lr_dir = os.path.join(r["output_uri"], "lr_0.001")
    lines = open(os.path.join(lr_dir, "dev_predictions", "conll2003.txt")).read().split("\n")
    sentences, _ = conll.read_conll(str(data / "valid.txt"), ConllParams())
    expected_words = [f"{w} {t}" for s in sentences for w, t in list(zip(s.words, s.tags)) + [("", "")]]
    assert [" ".join(x.split()[:2]) for x in lines[:-1]] == [e.strip() for e in expected_words]
    assert all(len(x.split()) == 3 and x.split()[2] in LABELS for x in lines[:-1] if x)
    metrics = json.load(open(os.path.join(lr_dir, "metrics.json")))
    assert metrics["truncated_words"] == {"train": 0, "dev": 0} and metrics["kind"] == "token_classification"


def test_results_table_labels_dev_averages_and_squad_threshold():
    def done(dev, score):
        return {"status": "done", "dev": dev, "score": score, "best_learning_rate": 2e-5, "seconds_per_epoch": 1.0}

    results = {
        "mnli": done({"mnli-m": {"accuracy": 0.8}, "mnli-mm": {"accuracy": 0.7}}, 75.0),
        "mrpc": done({"mrpc": {"f1": 0.9, "accuracy": 0.8}}, 85.0),
        "wnli": done({"wnli": {"accuracy": 0.5}}, 50.0),
        "squad_v2": done({"squad_v2.0": {"exact_match": 70.0, "f1": 73.0, "total": 3.0, "null_threshold": -1.5,
                                         "best_f1": 73.0, "null_threshold_tuned_on_dev": 1.0,
                                         "exact_match_at_threshold_0": 60.0, "f1_at_threshold_0": 64.0}}, 73.0),
    }
    summary = summarize(results, FinetuneConfig())
    assert summary["glue_score"] == pytest.approx((75 + 85 + 50) / 3)
    assert summary["glue_paper_average"] == pytest.approx((80 + 70 + 90) / 3)
    assert summary["glue_paper_evals"] == ["mnli-m", "mnli-mm", "mrpc"] and summary["split"] == "dev"
    table = results_markdown(summary)
    assert ("| squad_v2 | done | squad_v2.0: f1 73, exact_match 70 at null threshold -1.5 (tuned on this dev set); "
            "at threshold 0: f1 64, exact_match 60; total 3 | 73.0000 |") in table
    assert "GLUE score (3 of 9 tasks: mnli, mrpc, wnli; dev; all-task average" in table and "**70.0000**" in table
    assert "GLUE average as the BERT paper computes it (dev; mnli-m, mnli-mm, mrpc;" in table
    assert "WNLI excluded): **80.0000**" in table


def test_ner_task_config_checks():
    job = typed_config.from_dict(config.TaskJob, {"name": "slots", "ner": {"scheme": "iob1", "entity_types": ["A"]}})
    assert job.is_ner and conll.labels(job.ner) == ("O", "B-A", "I-A") and job.ner.files == ("eng.train", "eng.testa")
    with pytest.raises(ValueError, match="at most one of spec, squad, ner and multiple_choice"):
        config.TaskJob(name="x", ner=ConllParams(), squad=config.SquadParams())
    with pytest.raises(ValueError, match="iob1 or iob2"):
        ConllParams(scheme="bio")
    with pytest.raises(ValueError, match="set data_uri or conll_root"):
        config.task_data_uri(FinetuneConfig(), config.TaskJob(name="conll2003"))


def test_finetune_command_rejects_a_conll_file_in_another_scheme_before_training(tmp_path):
    from pipelines.finetune.command import BadInputError, check_task_files

    (tmp_path / "train.txt").write_text(TRAIN)
    (tmp_path / "valid.txt").write_text(TRAIN)
    ok = FinetuneConfig(tasks=(config.TaskJob(name="conll2003", data_uri=str(tmp_path)),))
    check_task_files(ok)
    wrong = FinetuneConfig(tasks=(config.TaskJob(name="conll2003", data_uri=str(tmp_path), ner=ConllParams(
        scheme="iob1", train_file="train.txt", dev_file="valid.txt")),))
    with pytest.raises(BadInputError, match=f"^{tmp_path}/train.txt: declared iob1 .*first at {tmp_path}/train.txt:3,"):
        check_task_files(wrong)
