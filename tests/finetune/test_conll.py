"""CoNLL reader (IOB1/IOB2, -DOCSTART-, bad rows, scheme check) and conlleval scoring against seqeval."""
import random

import pytest

from pipelines.finetune import conll, metrics
from pipelines.finetune.conll import ConllParams, Sentence
from pipelines.finetune.glue import BadRowError

IOB1 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
Smith NNP I-NP B-PER


-DOCSTART- -X- -X- O
BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O
-DOCSTART- -X- -X- O

Lamb NN I-NP O"""  # no blank line around the second -DOCSTART- and none at the end of file

IOB2 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
Smith NNP I-NP B-PER
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reader_exact_sentences_documents_and_lines(tmp_path):
    uri = write(tmp_path, "eng.train", IOB1)
    sentences, rep = conll.read_conll(uri, ConllParams(scheme="iob1"))
    assert sentences == [
        Sentence(("EU", "rejects", "German"), ("I-ORG", "O", "I-MISC"), 3, 0),
        Sentence(("Peter", "Blackburn", "Smith"), ("I-PER", "I-PER", "B-PER"), 7, 0),
        Sentence(("BRUSSELS", "1996-08-22"), ("I-LOC", "O"), 13, 1),
        Sentence(("Lamb",), ("O",), 17, 2),
    ]
    counts = ("num_rows", "num_kept", "num_bad", "num_tokens", "num_documents")
    assert tuple(rep[k] for k in counts) == (4, 4, 0, 9, 3)
    assert rep["num_scheme_violations"] == 0
    iob2, _ = conll.read_conll(write(tmp_path, "train.txt", IOB2), ConllParams())
    assert [s.tags for s in iob2] == [("B-ORG", "O", "B-MISC"), ("B-PER", "I-PER", "B-PER")]
    assert conll.labels(ConllParams()) == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
                                           "I-MISC")


def test_bad_rows_counted_with_their_sentence_or_raised(tmp_path):
    text = "A x I-PER\nb x O\n\nC x y I-ORG\nd x O\n\nE x I-FOO\n\nF x O\n"
    uri = write(tmp_path, "bad.txt", text)
    sentences, rep = conll.read_conll(uri, ConllParams(scheme="iob1"))
    assert [s.words for s in sentences] == [("A", "b"), ("F",)]
    assert rep["bad_by_reason"] == {"wrong column count": 1, "unknown tag": 1}
    assert (rep["num_rows"], rep["num_kept"], rep["num_bad"]) == (4, 2, 2)
    assert rep["bad_samples"] == [f"{uri}:4: wrong column count: 4 instead of 3", f"{uri}:7: unknown tag: 'I-FOO'"]
    with pytest.raises(BadRowError, match=f"^{uri}:4: wrong column count: 4 instead of 3$"):
        conll.read_conll(uri, ConllParams(scheme="iob1"), on_bad_row="raise")


def test_file_in_the_other_scheme_is_rejected_naming_file_and_line(tmp_path):
    iob1, iob2 = write(tmp_path, "eng.train", IOB1), write(tmp_path, "train.txt", IOB2)
    with pytest.raises(conll.SchemeError,
                       match=f"declared iob2 .*4 of 5 chunks break it, first at {iob1}:3, {iob1}:5, {iob1}:7;"):
        conll.read_conll(iob1, ConllParams(scheme="iob2"))
    with pytest.raises(conll.SchemeError, match=f"declared iob1 .*3 of 4 chunks break it, first at {iob2}:3, {iob2}:5, "
                                                f"{iob2}:7;"):
        conll.read_conll(iob2, ConllParams(scheme="iob1"))
    # an I- after a different type opens a chunk: an IOB2 violation too; half the chunks tolerated -> kept, listed
    mixed = write(tmp_path, "mixed.txt", "A x B-PER\nB x I-LOC\n")
    with pytest.raises(conll.SchemeError, match="1 of 2 chunks"):
        conll.read_conll(mixed, ConllParams())
    _, rep = conll.read_conll(mixed, ConllParams(max_scheme_violations=0.5))
    assert rep["scheme_violations"] == [f"{mixed}:2"] and rep["num_scheme_violations"] == 1
    assert conll.scheme_violations(["O", "B-PER", "I-PER", "B-PER", "I-LOC", "B-LOC"], "iob1") == [1]
    assert conll.scheme_violations(["I-PER", "B-PER", "I-PER", "I-LOC", "O", "I-LOC"], "iob2") == [0, 3, 5]


def test_predictions_file_is_conlleval_input(tmp_path):
    sentences, _ = conll.read_conll(write(tmp_path, "train.txt", IOB2), ConllParams())
    text = conll.format_predictions(sentences, [["B-ORG", "O", "O"], ["B-PER", "I-PER", "I-PER"]])
    assert text == ("EU B-ORG B-ORG\nrejects O O\nGerman B-MISC O\n\n"
                    "Peter B-PER B-PER\nBlackburn I-PER I-PER\nSmith B-PER I-PER\n\n")


# --- conlleval scoring ----------------------------------------------------------------------------
@pytest.mark.parametrize("tags,chunks", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["O", "I-LOC", "I-LOC"], [("LOC", 1, 2)]),  # an I- after O opens a chunk
    (["I-PER"], [("PER", 0, 0)]),  # ... so does one at the sentence start
    (["I-PER", "I-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 2, 3)]),  # IOB1's B- between same-type chunks
    (["B-PER", "I-ORG", "I-ORG"], [("PER", 0, 0), ("ORG", 1, 2)]),  # a type change ends and opens a chunk
    (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),
])
def test_conll_chunks_exact(tags, chunks):
    assert metrics.conll_chunks([tags]) == chunks


def test_chunks_never_span_sentences_and_scores_exact():
    assert metrics.conll_chunks([["B-PER", "I-PER"], ["I-PER", "O"]]) == [("PER", 0, 1), ("PER", 2, 2)]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "B-MISC"]]
    s = metrics.conll_scores(gold, pred)
    # gold PER LOC ORG; predicted PER ORG ORG MISC; correct PER and the second ORG (I- opens it like B-)
    assert (s["num_gold"], s["num_predicted"], s["num_correct"]) == (3, 4, 2)
    assert s["precision"] == 0.5 and s["recall"] == 2 / 3 and s["f1"] == pytest.approx(4 / 7, abs=1e-15)
    assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "num_gold": 1}
    assert s["per_type"]["ORG"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "num_gold": 1}
    assert s["per_type"]["MISC"]["num_gold"] == 0
    with pytest.raises(ValueError, match="differ"):
        metrics.conll_scores(gold, [["O"], ["O", "O"]])


def perturb(tags: list[list[str]], labels: tuple[str, ...], seed: int) -> list[list[str]]:
    """Predictions near the gold: some tags swapped for random labels, some B-/I- prefixes flipped."""
    rng = random.Random(seed)
    out = []
    for sent in tags:
        row = []
        for t in sent:
            r = rng.random()
            if r < 0.08:
                t = rng.choice(labels)
            elif r < 0.14 and t != "O":
                t = ("I-" if t[0] == "B" else "B-") + t[2:]
            row.append(t)
        out.append(row)
    return out


@pytest.mark.parametrize("scheme,folder,name", [("iob2", "iob2", "valid.txt"), ("iob1", "iob1_original", "eng.testa")])
def test_f1_equals_seqeval_on_real_valid_tags(shared_data, scheme, folder, name):
    from seqeval.metrics import classification_report

    params = ConllParams(scheme=scheme)
    sentences, _ = conll.read_conll(f"{shared_data}/conll2003/{folder}/{name}", params)
    gold = [list(s.tags) for s in sentences]
    for seed in range(2):
        pred = perturb(gold, conll.labels(params), seed)
        ours = metrics.conll_scores(gold, pred)
        assert ours["num_gold"] == 5942 and 0.5 < ours["f1"] < 0.95  # the perturbation is neither nil nor total
        # seqeval's default (non-strict) mode is conlleval's; "micro avg" is its f1_score/precision/recall
        report = classification_report(gold, pred, output_dict=True, zero_division=0)
        for kind, m in [("micro avg", ours)] + list(ours["per_type"].items()):
            for key in ("precision", "recall"):
                assert abs(m[key] - report[kind][key]) < 1e-9
            assert abs(m["f1"] - report[kind]["f1-score"]) < 1e-9 and m["num_gold"] == report[kind]["support"]


def test_real_files_counts_and_schemes(shared_data):
    root = f"{shared_data}/conll2003"
    got = {}
    for scheme, folder in (("iob2", "iob2"), ("iob1", "iob1_original")):
        params = ConllParams(scheme=scheme)
        for name in params.files:
            got[name] = conll.read_conll(f"{root}/{folder}/{name}", params)
    counts = {n: (len(s), r["num_tokens"], r["num_documents"], r["num_bad"]) for n, (s, r) in got.items()}
    assert counts == {"train.txt": (14041, 203621, 946, 0), "valid.txt": (3250, 51362, 216, 0),
                      "eng.train": (14041, 203621, 946, 0), "eng.testa": (3250, 51362, 216, 0)}
    assert conll.tag_counts(got["train.txt"][0]) == {
        "B-PER": 6600, "I-PER": 4528, "B-ORG": 6321, "I-ORG": 3704, "B-LOC": 7140, "I-LOC": 1157, "B-MISC": 3438,
        "I-MISC": 1155, "O": 169578}
    # the official IOB1 train file's two annotation slips (B-MISC after O) are tolerated and listed
    assert got["eng.train"][1]["scheme_violations"] == [f"{root}/iob1_original/eng.train:152428",
                                                        f"{root}/iob1_original/eng.train:175436"]
    with pytest.raises(conll.SchemeError, match="eng.train: declared iob1 .* 2 of 23499 chunks"):
        conll.read_conll(f"{root}/iob1_original/eng.train", ConllParams(scheme="iob1", max_scheme_violations=0))
    # IOB1 and IOB2 taggings of the same corpus are the same chunks: F1 1 against each other
    gold, other = ([list(s.tags) for s in got[n][0]] for n in ("valid.txt", "eng.testa"))
    assert metrics.conll_scores(gold, other)["f1"] == 1.0 and [s.words for s in got["valid.txt"][0]] == [
        s.words for s in got["eng.testa"][0]]
