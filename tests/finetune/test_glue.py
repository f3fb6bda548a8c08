"""GLUE readers on tiny hand-written files in each task's official column layout."""
import pytest

from pipelines.finetune import glue
from pipelines.finetune.glue import GLUE_TASKS, BadRowError, read_tsv

T = "\t"


def write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(T.join(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_cola_train_has_no_header(tmp_path):
    uri = write(tmp_path, "train.tsv", [["gj04", "1", "", "Our friends won't buy this analysis."],
                                        ["gj04", "0", "*", "They drank the pub."]])
    examples, report = read_tsv(uri, GLUE_TASKS["cola"], "train")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("Our friends won't buy this analysis.", None, 1), ("They drank the pub.", None, 0)]
    assert report.num_rows == 2 and report.num_bad == 0


def test_cola_test_has_header_and_index(tmp_path):
    uri = write(tmp_path, "test.tsv", [["index", "sentence"], ["0", "Bill whistled past the house."]])
    examples, _ = read_tsv(uri, GLUE_TASKS["cola"], "test")
    assert examples[0].guid == "0" and examples[0].label is None


def test_sst2_keeps_quotes_verbatim(tmp_path):
    uri = write(tmp_path, "dev.tsv", [["sentence", "label"], ['it \'s a " charming " journey ', "1"]])
    examples, _ = read_tsv(uri, GLUE_TASKS["sst2"], "dev")
    assert examples[0].text_a == 'it \'s a " charming " journey ' and examples[0].label == 1


def test_mrpc_columns_by_header(tmp_path):
    uri = write(tmp_path, "train.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                        ["1", "702876", "702977", "Amrozi accused his brother.", "Referring to him."]])
    (e,), _ = read_tsv(uri, GLUE_TASKS["mrpc"], "train")
    assert (e.text_a, e.text_b, e.label) == ("Amrozi accused his brother.", "Referring to him.", 1)


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    # the official MRPC train.tsv/dev.tsv start with a UTF-8 BOM, glued to the "Quality" header
    path = tmp_path / "train.tsv"
    path.write_bytes(b"\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA b.\tC d.\n")
    (e,), report = read_tsv(str(path), GLUE_TASKS["mrpc"], "train")
    assert (e.text_a, e.text_b, e.label, report.num_bad) == ("A b.", "C d.", 1, 0)


def test_stsb_float_labels(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    uri = write(tmp_path, "dev.tsv", [header, ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                                               "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.",
                                               "5.000"],
                                      ["1", "main-captions", "MSRvid", "2012test", "0002", "none", "none",
                                       "A young child is riding a horse.", "A child is riding a horse.", "4.750"]])
    examples, _ = read_tsv(uri, GLUE_TASKS["stsb"], "dev")
    assert [e.label for e in examples] == [5.0, 4.75]
    assert GLUE_TASKS["stsb"].num_labels == 1


def test_qqp_ids_and_malformed_row(tmp_path):
    uri = write(tmp_path, "train.tsv", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                        ["133273", "213221", "213222", "How is the life?", "How is life?", "0"],
                                        ["402555", "536040", "How do I?"]])  # truncated row, as in the real file
    examples, report = read_tsv(uri, GLUE_TASKS["qqp"], "train")
    assert len(examples) == 1 and report.bad == {"wrong column count": 1}
    assert report.samples[0].startswith(f"{uri}:3: wrong column count")
    test_uri = write(tmp_path, "test.tsv", [["id", "question1", "question2"], ["7", "Why?", "Why not?"]])
    (t,), _ = read_tsv(test_uri, GLUE_TASKS["qqp"], "test")
    assert t.guid == "7"


MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def test_mnli_matched_and_mismatched_layouts(tmp_path):
    parses = ["( x )", "( y )", "(ROOT x)", "(ROOT y)"]
    train = write(tmp_path, "train.tsv", [MNLI_TRAIN, ["0", "31193", "31193n", "government", *parses,
                                                       "Conceptually cream skimming.", "Product and geography.",
                                                       "neutral", "neutral"]])
    dev_row = ["0", "63735", "63735n", "slate", *parses, "The new rights are nice.", "Everyone loves them.",
               "neutral", "entailment", "neutral", "neutral", "neutral", "neutral"]
    dev_m = write(tmp_path, "dev_matched.tsv", [MNLI_DEV, dev_row])
    dev_mm = write(tmp_path, "dev_mismatched.tsv", [MNLI_DEV, dev_row[:-1] + ["contradiction"]])
    spec = GLUE_TASKS["mnli"]
    assert read_tsv(train, spec, "train")[0][0].label == 2
    assert read_tsv(dev_m, spec, "dev")[0][0].label == 2
    assert read_tsv(dev_mm, spec, "dev")[0][0].label == 0
    assert [s for s, _ in spec.dev_files] == ["m", "mm"]


@pytest.mark.parametrize("task,header,row,label", [
    ("qnli", ["index", "question", "sentence", "label"], ["0", "When?", "In 1990.", "entailment"], 0),
    ("rte", ["index", "sentence1", "sentence2", "label"], ["0", "A dog ran.", "An animal ran.", "not_entailment"], 1),
    ("wnli", ["index", "sentence1", "sentence2", "label"], ["0", "I stuck a pin.", "The pin stuck.", "1"], 1),
])
def test_pair_tasks(tmp_path, task, header, row, label):
    (e,), _ = read_tsv(write(tmp_path, "dev.tsv", [header, row]), GLUE_TASKS[task], "dev")
    assert (e.text_a, e.text_b, e.label) == (row[1], row[2], label)


def test_bad_rows_counted_by_reason(tmp_path):
    uri = write(tmp_path, "train.tsv", [["index", "sentence1", "sentence2", "label"],
                                        ["0", "a", "b", "entailment"],
                                        ["1", "a", "b", ""],
                                        ["2", "a", "b", "maybe"],
                                        ["3", "", "b", "entailment"],
                                        ["4", "a", "b"]])
    examples, report = read_tsv(uri, GLUE_TASKS["rte"], "train")
    assert len(examples) == 1 and report.num_rows == 5
    assert report.bad == {"missing label": 1, "unknown label": 1, "empty text": 1, "wrong column count": 1}
    assert report.to_dict()["num_bad"] == 4


def test_bad_row_raise_names_file_and_line(tmp_path):
    uri = write(tmp_path, "dev.tsv", [["sentence", "label"], ["fine", "1"], ["odd", "7"]])
    with pytest.raises(BadRowError, match=r"dev\.tsv:3: unknown label: '7'"):
        read_tsv(uri, GLUE_TASKS["sst2"], "dev", on_bad_row="raise")


def test_stsb_non_numeric_label_counted(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    uri = write(tmp_path, "dev.tsv", [header, ["0"] * 7 + ["a", "b", "high"]])
    _, report = read_tsv(uri, GLUE_TASKS["stsb"], "dev")
    assert report.bad == {"non-numeric label": 1}


def test_missing_header_column_is_a_clear_error(tmp_path):
    uri = write(tmp_path, "dev.tsv", [["text", "label"], ["x", "1"]])
    with pytest.raises(BadRowError, match="lacks column"):
        read_tsv(uri, GLUE_TASKS["sst2"], "dev")


def test_reads_from_s3(s3_bucket, tmp_path):
    from pipelines import storage

    storage.write_bytes_atomic(f"{s3_bucket}/SST-2/dev.tsv", b"sentence\tlabel\ngood film\t1\n")
    uri = glue.task_uri(s3_bucket, GLUE_TASKS["sst2"], "dev.tsv")
    examples, _ = read_tsv(uri, GLUE_TASKS["sst2"], "dev")
    assert examples[0].label == 1


def test_leaderboard_prediction_format():
    text = glue.format_predictions(GLUE_TASKS["mnli"], ["0", "1"], [1, 2])
    assert text == "index\tprediction\n0\tentailment\n1\tneutral\n"
    assert glue.format_predictions(GLUE_TASKS["stsb"], ["0"], [3.14159]) == "index\tprediction\n0\t3.142\n"
