import pyarrow as pa
import pytest

from pipelines.schemas import DOCUMENTS
from pipelines.stages import split


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith paid $3.50 for it. Then he left! Did he? Yes.",
     ["Dr. Smith paid $3.50 for it.", "Then he left!", "Did he?", "Yes."]),
    ("J. R. R. Tolkien wrote it, e.g. The Hobbit. The U.S. Army agreed. It was 3 p.m. today.",
     ["J. R. R. Tolkien wrote it, e.g. The Hobbit.", "The U.S. Army agreed.", "It was 3 p.m. today."]),
    ('"Stop," he said. "Now!" She waited... and waited... Then silence. Wait... What?',
     ['"Stop," he said.', '"Now!"', "She waited... and waited...", "Then silence.", "Wait...", "What?"]),
    ("First line without stop\nSecond line. Third (sentence). See Fig. 3 for details.",
     ["First line without stop", "Second line.", "Third (sentence).", "See Fig. 3 for details."]),
    ("Apples, pears, etc. Bananas too. Version 3.11 is out (see section 2.1).",
     ["Apples, pears, etc.", "Bananas too.", "Version 3.11 is out (see section 2.1)."]),
    ("One sentence only", ["One sentence only"]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert split.split_sentences(text) == expected


def test_core_drops_empty_documents():
    docs = pa.table({"doc_id": ["a", "b"], "text": ["A b. C d.", ""]}, schema=DOCUMENTS)
    assert split.core(docs, split.SplitConfig()).to_pylist() == [{"doc_id": "a", "sentences": ["A b.", "C d."]}]
