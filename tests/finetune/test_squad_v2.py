"""SQuAD v2.0: the scorer against the official evaluate-v2.0.py's own outputs on the real dev set,
gold-logit decoding on that file, and the v1.1/v2.0 file checks."""
import json

import numpy as np
import pytest

from pipelines.finetune import metrics, squad
from pipelines.finetune.squad import SquadParams
from pipelines.finetune.squad.read import SquadVersionError
from pipelines.finetune.train import load_tokenizer

# prediction file, no-answer probability file, --na-prob-thresh, what the official script wrote
OFFICIAL = [("predictions_empty.json", None, 1.0, "official_empty.json"),
            ("predictions_gold_first.json", None, 1.0, "official_gold_first.json"),
            ("predictions_seeded_noisy.json", "na_prob_seeded_noisy.json", 1.0, "official_seeded_noisy.json"),
            ("predictions_seeded_noisy.json", "na_prob_seeded_noisy.json", 0.5, "official_seeded_noisy_t0.5.json")]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def v2_dev(shared_data):
    examples, report = squad.read_squad(f"{shared_data}/squad_v2.0/dev-v2.0.json", version="v2.0")
    return examples, report


def gold_answers(examples):
    return {ex.qid: [] if ex.is_impossible else [t for t, _ in ex.answers] for ex in examples}


@pytest.mark.parametrize("preds,na_probs,thresh,official", OFFICIAL)
def test_scorer_gives_the_official_numbers_on_the_real_dev_set(shared_data, v2_dev, preds, na_probs, thresh, official):
    folder = f"{shared_data}/squad_v2.0/official_scores"
    expected = read_json(f"{folder}/{official}")
    ours = metrics.squad_v2_scores(gold_answers(v2_dev[0]), read_json(f"{folder}/{preds}"),
                                   read_json(f"{folder}/{na_probs}") if na_probs else None, thresh)
    assert list(ours) == list(expected)  # the same keys, in the official order
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9, rel=0), key


def test_scorer_rules_on_tiny_input():
    golds = {"a": ["The Denver Broncos", "Broncos"], "b": [], "c": ["Paris"], "d": []}
    preds = {"a": "denver broncos!", "b": "", "c": "in Paris France", "d": "Lyon"}
    out = metrics.squad_v2_scores(golds, preds)
    # a: exact after normalisation; b: "" right for unanswerable; c: F1 2*(1/3*1)/(1/3+1) = 0.5; d: wrong
    assert out == {"exact": 50.0, "f1": 62.5, "total": 4, "HasAns_exact": 50.0, "HasAns_f1": 75.0,
                   "HasAns_total": 2, "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2}
    probs = {"a": 0.1, "b": 0.9, "c": 0.6, "d": 0.7}
    out = metrics.squad_v2_scores(golds, preds, probs, na_prob_thresh=0.65)
    assert (out["exact"], out["NoAns_exact"]) == (75.0, 100.0)  # b and d answered "" above 0.65, a and c kept
    # answering a (0.1) then c (0.6) is best: 1 + 0.5 + b, d null
    assert (out["best_f1"], out["best_f1_thresh"]) == (87.5, 0.6)
    assert (out["best_exact"], out["best_exact_thresh"]) == (75.0, 0.1)
    all_null = metrics.squad_v2_scores({"x": []}, {"x": "y"}, {"x": 0.3})
    assert (all_null["best_exact"], all_null["best_exact_thresh"]) == (100.0, 0.0)  # the official script's 0.0


def gold_pointing_logits(train_feats):
    """Per window, start/end logits peaked on the gold span build_features labelled, or on [CLS] when
    the window does not hold the first gold answer or the question has none: a perfect model's output."""
    starts, ends = [], []
    for ids, s, e in zip(train_feats.input_ids, train_feats.start_positions, train_feats.end_positions):
        start, end = np.zeros(len(ids), np.float32), np.zeros(len(ids), np.float32)
        start[s], end[e] = 10.0, 10.0
        starts.append(start)
        ends.append(end)
    return starts, ends


def test_gold_logits_decode_on_the_real_v2_dev_file(minilm_dir, v2_dev):
    """s_null = start[CLS] + end[CLS] (the lowest over a question's windows) against the best span; the
    threshold tuned on dev is reported. Misses are only answers cut inside a word piece, as for v1.1."""
    examples, report = v2_dev
    assert len(examples) == 11873 and report.num_bad == 0
    params = SquadParams(version="v2.0")
    tok = load_tokenizer(minilm_dir)
    train_feats = squad.build_features(examples, tok, params, max_seq_length=384, training=True)
    feats = squad.build_features(examples, tok, params, max_seq_length=384, training=False)
    assert feats.input_ids == train_feats.input_ids
    scores, texts, odds = squad.evaluate_squad(examples, feats, *gold_pointing_logits(train_feats), params)
    assert scores["total"] == 11873 and scores["NoAns_total"] == 5945 and scores["HasAns_total"] == 5928
    assert scores["exact_match"] >= 99.0 and scores["f1"] >= 99.5, scores
    assert scores["NoAns_exact"] == 100.0 and scores["NoAns_f1"] == 100.0
    assert -20.0 <= scores["null_threshold"] < 20.0  # between the answerable (-20) and unanswerable (+20) diffs
    assert scores["best_f1"] == pytest.approx(scores["f1"], abs=1e-9) and scores["best_f1_thresh"] == scores["null_threshold"]
    assert sum(t == "" for t in texts.values()) == 5945 and set(odds) == set(texts)


def test_a_file_of_the_other_version_is_refused_naming_the_field(tmp_path):
    v11 = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}]}]}]}
    v20 = json.loads(json.dumps(v11))
    v20["version"] = "v2.0"
    v20["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = False
    paths = {}
    for name, data in (("v11", v11), ("v20", v20)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    with pytest.raises(SquadVersionError, match=r"v20\.json: field 'version' is 'v2\.0'.*v1\.1"):
        squad.read_squad(str(paths["v20"]), version="v1.1")
    with pytest.raises(SquadVersionError, match=r"v11\.json: field 'version' is '1\.1'.*v2\.0"):
        squad.read_squad(str(paths["v11"]), version="v2.0")
    del v20["version"]
    paths["v20"].write_text(json.dumps(v20))
    with pytest.raises(SquadVersionError, match=r"field 'is_impossible' at data\[0\]\.paragraphs\[0\] question q1"):
        squad.read_squad(str(paths["v20"]), version="v1.1")
    assert len(squad.read_squad(str(paths["v20"]), version="v2.0")[0]) == 1
    assert len(squad.read_squad(str(paths["v11"]), version="v1.1")[0]) == 1
