"""The report stage on a tiny hand-made run: the data each panel draws (held-out MLM beside the unigram
line, NSP beside chance, both fine-tuning curves with integer epochs), the plain headline and the
held-out table, and the stage's files."""
from __future__ import annotations

import json
import os

import pytest

from pipelines import report

BASE = {"rows": 256, "masked_positions": 2000, "unigram_loss": 6.4, "unigram_accuracy": 0.047,
        "unigram_entropy": 6.48, "unigram_most_frequent_id": 74, "unigram_counted_rows": 28000, "nsp_chance": 0.5,
        "nsp_majority": 0.61, "random_next_share": 0.61, "files": ["part-00015-0000.parquet"]}
PRETRAIN = {"phase0": [
    {"step": 10, "mlm_loss": 7.0, "mlm_accuracy": 0.04, "nsp_loss": 0.70, "nsp_accuracy": 0.50},
    {"step": 20, "mlm_loss": 6.5, "mlm_accuracy": 0.06, "nsp_loss": 0.69, "nsp_accuracy": 0.52,
     "heldout_mlm_loss": 6.3, "heldout_mlm_accuracy": 0.08, "heldout_nsp_loss": 0.68, "heldout_nsp_accuracy": 0.60},
    {"step": 30, "mlm_loss": 6.1, "mlm_accuracy": 0.11, "nsp_loss": 0.68, "nsp_accuracy": 0.55,
     "heldout_mlm_loss": 5.9, "heldout_mlm_accuracy": 0.13, "heldout_nsp_loss": 0.67, "heldout_nsp_accuracy": 0.62}]}


def _epochs(losses, accuracies):
    return [{"epoch": i + 1, "train_loss": loss, "dev": {"movie_sentiment": {"accuracy": acc}}}
            for i, (loss, acc) in enumerate(zip(losses, accuracies))]


FINETUNE = {"movie_sentiment": _epochs([0.69, 0.6, 0.5], [0.55, 0.6, 0.62]),
            "movie_sentiment (from scratch)": _epochs([0.7, 0.55, 0.4], [0.6, 0.68, 0.70])}
SUMMARY = {"tasks": {"movie_sentiment": {
    "status": "done", "dev": {"movie_sentiment": {"accuracy": 0.62}}, "score": 62.0, "best_learning_rate": 0.0005,
    "seconds_per_epoch": 10.0, "data_reports": [], "output_uri": "",
    "scratch": {"dev": {"movie_sentiment": {"accuracy": 0.70}}, "score": 70.0, "learning_rate": 0.0005,
                "seconds_per_epoch": 9.0}}},
    "glue_score": None, "glue_tasks": []}


def _lines(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_figure_draws_heldout_beside_unigram_and_both_finetuning_runs():
    import matplotlib.pyplot as plt

    fig = report.loss_figure(PRETRAIN, FINETUNE, "run x", {"phase0": BASE})
    ax_mlm, ax_nsp, ax_loss, ax_dev = fig.axes
    assert _lines(ax_mlm) == {
        "training batches (phase0)": ([10, 20, 30], [7.0, 6.5, 6.1]),
        "held-out rows (phase0)": ([20, 30], [6.3, 5.9]),
        "unigram predictor on the held-out words (6.40)": ([10, 30], [6.4, 6.4])}
    assert _lines(ax_nsp) == {"training batches (phase0)": ([10, 20, 30], [0.5, 0.52, 0.55]),
                              "held-out rows (phase0)": ([20, 30], [0.6, 0.62]),
                              "always the commoner label, held-out (0.61)": ([10, 30], [0.61, 0.61]),
                              "chance (0.5)": ([0, 1], [0.5, 0.5])}
    assert _lines(ax_loss) == {"movie_sentiment (pretrained)": ([1, 2, 3], [0.69, 0.6, 0.5]),
                               "movie_sentiment (from scratch)": ([1, 2, 3], [0.7, 0.55, 0.4])}
    assert _lines(ax_dev) == {"movie_sentiment (pretrained): accuracy": ([1, 2, 3], [0.55, 0.6, 0.62]),
                              "movie_sentiment (from scratch): accuracy": ([1, 2, 3], [0.6, 0.68, 0.70])}
    fig.canvas.draw()
    for ax in (ax_loss, ax_dev):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    low, high = ax_dev.get_ylim()
    assert low < 0.55 and high > 0.70  # both runs in view
    # MLM: from just under the lowest loss to above the highest held-out one or the unigram line
    assert ax_mlm.get_ylim() == pytest.approx((5.9 - 0.15, 6.4 + 0.6))
    plt.close(fig)


def test_headline_and_heldout_table():
    table = report.results_markdown(SUMMARY, PRETRAIN, {"phase0": BASE})
    lines = table.splitlines()
    assert lines[0] == (
        "What this shows: held-out MLM loss 5.90 vs 6.40 for a unigram predictor on the same masked words (0.50 nats "
        "lower: the model predicts from context, beyond word frequency); NSP accuracy 0.62 vs chance 0.50 and 0.61 "
        "for always guessing the commoner label (within +-0.06 of that guess over 256 rows: not learned); "
        "fine-tuning movie_sentiment: dev accuracy 0.6200 from the pretrained model vs 0.7000 from random init "
        "(pretraining did not help).")
    assert "| held-out (phase0, step 30: 256 rows, 2000 masked words) | model | baseline |" in lines
    assert ("| MLM loss | 5.900 | 6.400 (unigram predictor on the same words; corpus unigram entropy 6.480) |"
            in lines)
    assert "| MLM acc | 0.130 | 0.047 (always the most frequent piece) |" in lines
    assert "| NSP acc | 0.620 | 0.500 (chance; the commoner label 0.610) |" in lines
    assert "| movie_sentiment (from scratch) | done | movie_sentiment: accuracy 0.7 | 70.0000 | 0.0005 | 9.0 | 0 |" in lines


def test_mlm_only_run_has_no_nsp_and_the_table_counts_real_tokens():
    """The MLM-only objective's metrics have no NSP keys: no NSP line, cell or curve; the pretraining table
    gives the phase's mean share of real tokens and real tokens per second."""
    import matplotlib.pyplot as plt

    mlm = {"phase0": [{k: v for k, v in row.items() if "nsp" not in k} | {"real_token_share": share,
                                                                        "tokens_per_s": rate}
                      for row, share, rate in zip(PRETRAIN["phase0"], (1.0, 0.99, 0.98), (900.0, 1000.0, 1100.0))]}
    table = report.results_markdown(SUMMARY, mlm, {"phase0": BASE})
    lines = table.splitlines()
    assert "NSP" not in lines[0] and "held-out MLM loss 5.90 vs 6.40" in lines[0]
    assert lines[2:5] == ["| pretraining | steps | MLM loss | MLM acc | NSP loss | NSP acc | real tokens | tokens/s |",
                          "|---|---|---|---|---|---|---|---|",
                          "| phase0 | 30 | 6.100 | 0.110 | - | - | 99.0% | 1,000 |"]
    assert not [line for line in lines if line.startswith("| NSP acc")]
    fig = report.loss_figure(mlm, FINETUNE, "run x", {"phase0": BASE})
    ax_nsp = fig.axes[1]
    assert _lines(ax_nsp) == {} and ax_nsp.texts[0].get_text() == "MLM-only objective: no next-sentence task"
    plt.close(fig)


def test_no_headline_without_heldout_or_scratch():
    summary = {"tasks": {"t": {**SUMMARY["tasks"]["movie_sentiment"]}}, "glue_score": None, "glue_tasks": []}
    del summary["tasks"]["t"]["scratch"]
    assert report.results_markdown(summary, PRETRAIN).startswith("| pretraining | steps |")
    assert report.results_markdown(summary).startswith("| task | status |")


def test_report_stage_files(tmp_path):
    run = tmp_path / "pretrain" / "abc"
    (run / "phase0" / "export").mkdir(parents=True)
    (run / "phase0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PRETRAIN["phase0"]))
    (run / "phase0" / "heldout.json").write_text(json.dumps(BASE))
    task = tmp_path / "finetune" / "movie_sentiment"
    for sub, name in (("lr_0.0005", "movie_sentiment"), ("scratch/lr_0.0005", "movie_sentiment (from scratch)")):
        (task / sub).mkdir(parents=True)
        (task / sub / "metrics.json").write_text(json.dumps({"epochs": FINETUNE[name]}))
    summary = json.loads(json.dumps(SUMMARY))
    summary["tasks"]["movie_sentiment"]["output_uri"] = str(task)
    (tmp_path / "finetune" / "results.json").write_text(json.dumps(summary))
    assert report.finetune_curves(summary) == FINETUNE
    out = report.write_report(str(tmp_path), "k", {"finetune": {"output": str(tmp_path / "finetune" / "results.json")},
                                                   "pretrain": {"output": str(run / "phase0" / "export")}})
    assert open(out["output"]).read().startswith("What this shows: held-out MLM loss 5.90 vs 6.40")
    assert os.path.getsize(out["plot"]) > 10_000
    saved = json.load(open(out["json"]))["pretrain_heldout"]["phase0"]
    assert saved == {"baselines": BASE, "last": PRETRAIN["phase0"][2]}
