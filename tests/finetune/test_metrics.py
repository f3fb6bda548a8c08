"""Metric functions against scipy/sklearn and the official SQuAD normalisation cases."""
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from pipelines.finetune import metrics as M


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    assert M.accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
    assert M.f1_binary(p, y) == pytest.approx(skm.f1_score(y, p))
    assert M.matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))


def test_multiclass_matthews_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    p[:150] = y[:150]
    assert M.matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))


def test_degenerate_cases_follow_sklearn():
    y = np.array([1, 1, 1, 1])
    assert M.matthews_corrcoef(y, y) == skm.matthews_corrcoef(y, y) == 0.0
    assert M.f1_binary([0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 100).astype(float)  # many ties, like STS-B's 0-5 scores
    y = x + rng.normal(0, 1.5, 100)
    assert M.pearson(y, x) == pytest.approx(stats.pearsonr(y, x)[0])
    assert M.spearman(y, x) == pytest.approx(stats.spearmanr(y, x)[0])


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        M.accuracy([1, 0], [1])


def test_glue_score_reproduces_leaderboard_bert_large():
    """BERT-large's GLUE test row (Devlin et al. 2019, table 1 / leaderboard): score 80.5."""
    row = {"cola": [{"matthews": 60.5}], "sst2": [{"accuracy": 94.9}], "mrpc": [{"f1": 89.3, "accuracy": 85.4}],
           "stsb": [{"pearson": 87.6, "spearman": 86.5}], "qqp": [{"f1": 72.1, "accuracy": 89.3}],
           "mnli": [{"accuracy": 86.7}, {"accuracy": 85.9}], "qnli": [{"accuracy": 92.7}],
           "rte": [{"accuracy": 70.1}], "wnli": [{"accuracy": 65.1}]}
    scores = {task: M.task_score(evals, list(evals[0])) for task, evals in row.items()}
    assert scores["mrpc"] == pytest.approx(87.35) and scores["mnli"] == pytest.approx(86.3)
    assert round(M.glue_score(scores), 1) == 80.5


@pytest.mark.parametrize("row,average", [
    ((84.6, 83.4, 71.2, 90.5, 93.5, 52.1, 85.8, 88.9, 66.4), 79.6),  # BERT-base, table 1
    ((86.7, 85.9, 72.1, 92.7, 94.9, 60.5, 86.5, 89.3, 70.1), 82.1),  # BERT-large
])
def test_paper_glue_average_reproduces_table_1(row, average):
    """The paper's Average: MNLI-m/-mm, QQP F1, QNLI, SST-2, CoLA, STS-B Spearman, MRPC F1, RTE; no WNLI."""
    m, mm, qqp, qnli, sst2, cola, stsb, mrpc, rte = (x / 100 for x in row)
    dev = {"mnli": {"mnli-m": {"accuracy": m}, "mnli-mm": {"accuracy": mm}}, "qqp": {"qqp": {"f1": qqp, "accuracy": 0}},
           "qnli": {"qnli": {"accuracy": qnli}}, "sst2": {"sst2": {"accuracy": sst2}},
           "cola": {"cola": {"matthews": cola}}, "stsb": {"stsb": {"pearson": 0, "spearman": stsb}},
           "mrpc": {"mrpc": {"f1": mrpc, "accuracy": 0}}, "rte": {"rte": {"accuracy": rte}},
           "wnli": {"wnli": {"accuracy": 0.0}}}
    value, evals = M.paper_glue_average(dev)
    assert round(value, 1) == average and len(evals) == 9 and "wnli" not in evals
    assert M.paper_glue_average({"wnli": {"wnli": {"accuracy": 0.6}}}) == (None, [])


# Cases worked through the official evaluate-v1.1.py / v2.0.py normalisation.
@pytest.mark.parametrize("text,normalized", [
    ("The Cat.", "cat"),
    ("  an  apple, a day ", "apple day"),
    ("Theatre", "theatre"),                       # articles only as whole words
    ("Denver Broncos!", "denver broncos"),
    ("the the  THE", ""),
    ("rock'n'roll", "rocknroll"),                 # punctuation removed, not spaced
    ("1,000 yards", "1000 yards"),
    ("Beyoncé", "beyoncé"),                       # non-ASCII kept
])
def test_squad_normalisation(text, normalized):
    assert M.normalize_answer(text) == normalized


def test_squad_em_f1_official_cases():
    assert M.squad_exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert M.squad_f1("Denver Broncos", "the Denver Broncos won") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert M.squad_f1("cat", "dog") == 0.0
    assert M.squad_f1("", "") == 1.0 and M.squad_f1("a", "") == 1.0  # "a" normalises to ""
    assert M.squad_f1("cat", "") == 0.0
    # repeated tokens count with multiplicity (Counter intersection)
    assert M.squad_f1("red red red", "red") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


def test_squad_scores_max_over_golds_and_no_answer():
    golds = {"q1": ["Broncos", "Denver Broncos"], "q2": [], "q3": ["Paris"]}
    preds = {"q1": "the Denver Broncos", "q2": "", "q3": "London"}
    out = M.squad_scores(preds, golds)
    assert out["exact_match"] == pytest.approx(200 / 3)
    assert out["f1"] == pytest.approx(200 / 3)
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["NoAns_exact"] == 100.0
    assert M.squad_scores({}, {"q": ["x"]})["exact_match"] == 0.0
