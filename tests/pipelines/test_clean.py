import pyarrow as pa

from pipelines.schemas import DOCUMENTS
from pipelines.stages import clean

CFG = clean.CleanConfig(min_chars=20)


def test_clean_text_exact():
    raw = ("Caf\u0065\u0301 \ufb01ne   text\twith\x00 control\x07 chars \ufffd here.\n"
           ".. note::\n========\n>>> print(1)\n| table | row |\n12 34 56 78 90 {} []\n"
           "Second   prose line.")
    text, reason, num_markup, num_bad = clean.clean_text(raw, CFG)
    assert text == "Café fine text with control chars here.\nSecond prose line."
    assert (reason, num_markup, num_bad) == ("", 5, 3)


def test_every_unicode_whitespace_collapses_and_letters_count_in_any_script():
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace() and chr(c) not in "\n\r"]
    assert len(spaces) == 27  # the ASCII six less \n and \r, \x1c-\x1f, \x85, NBSP, the U+2000 block, ...
    for space in spaces:
        assert clean._clean_line(f"{space}alpha{space}{space}beta{space}", 0.6) == "alpha beta", repr(space)
    # 3 letters of 5 visible characters: kept at 0.6, dropped above; ASCII and other scripts alike
    for line in ("ab c12", "éß 中12", "ab é12", "ab c٣٤"):
        assert clean._clean_line(line, 0.6) == line and clean._clean_line(line, 0.61) is None, line
    # "_" and decimal digits are not letters, as in the regex [^\W\d_]: 2 of 5 in "a_b12"
    assert clean._clean_line("a_b 12", 0.4) == "a_b 12" and clean._clean_line("a_b 12", 0.41) is None


def test_drop_reasons():
    assert clean.clean_text("short", CFG)[1] == "too_short"
    assert clean.clean_text("x" * 50, clean.CleanConfig(min_chars=1, max_chars=40))[1] == "too_long"
    garbage = bytes(range(256)).decode("latin-1") * 4
    assert clean.clean_text(garbage, CFG)[1] == "binary"
    assert clean.clean_text("\ufffd" * 30 + "words", CFG)[1] == "binary"


def test_a_100_mb_single_line_is_a_counted_drop():
    text, reason, _, _ = clean.clean_text("word " * 20_000_000, clean.CleanConfig())
    assert (text, reason) == ("", "too_long")


def test_core_and_duplicates():
    docs = pa.table({"doc_id": ["b#1", "a#1", "c#1", "d#1"],
                     "text": ["The same   prose, twice over.", "The same prose, twice over.", "tiny",
                              "Something different entirely."]}, schema=DOCUMENTS)
    work = clean.core(docs, CFG)
    assert work.column("drop_reason").to_pylist() == ["", "", "too_short", ""]
    assert work.column("text_hash")[0] == work.column("text_hash")[1]
    marked = clean.mark_duplicates(work.select(["doc_id", "drop_reason", "text_hash"]))
    reasons = dict(zip(marked.column("doc_id").to_pylist(), marked.column("drop_reason").to_pylist()))
    assert reasons == {"a#1": "", "b#1": "duplicate", "c#1": "too_short", "d#1": ""}  # smallest doc_id kept
    # independent of row order
    again = clean.mark_duplicates(work.select(["doc_id", "drop_reason", "text_hash"]).take([3, 2, 1, 0]))
    assert again.equals(marked)


def test_run_clean_counts_and_dedups_across_files(ray_session, tmp_path, demo_files):
    from pipelines import stage_store
    from pipelines.stages import read

    import shutil
    shutil.copy(demo_files[0], tmp_path / "copy.txt.gz")  # every document of this file twice
    (tmp_path / "junk.txt").write_bytes(b"\x00\x01\x02\xff\xfe" * 200 + b"\n\nshort one\n")
    root = str(tmp_path / "root")
    read_uri = read.run_read(read.ReadConfig(), [demo_files[0], str(tmp_path / "copy.txt.gz"),
                                                 str(tmp_path / "junk.txt")], root)
    uri = clean.run_clean(clean.CleanConfig(num_buckets=4), read_uri, root)
    stats = stage_store.read_stats(uri)
    kept = stage_store.read_table(uri)
    ids = kept.column("doc_id").to_pylist()
    # every text of the demo file has a twin in the copy: the one whose doc_id sorts first is kept
    loser = max(demo_files[0], str(tmp_path / "copy.txt.gz"))
    assert ids == sorted(ids) and not any(i.startswith(loser + "#") for i in ids)
    assert stats["dropped"]["duplicate"] >= stats["documents"] * 0.9  # nearly all of the first file is copied
    assert stats["dropped"]["binary"] == 1 and stats["dropped"]["too_short"] >= 1
    assert stats["documents_in"] == stats["documents"] + sum(stats["dropped"].values())
    assert len(set(kept.column("text").to_pylist())) == kept.num_rows
