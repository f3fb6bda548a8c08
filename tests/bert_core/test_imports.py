"""bert_core's names load their module on first use: the data stages' workers import the tokenizer
(and the stages) without torch."""
import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("statement", [
    "from bert_core import WordPieceTokenizer, SPECIAL_TOKENS, BertConfig, PRESETS",
    "import pipelines.stages.tokenize, pipelines.stages.wordpiece, pipelines.stages.nsp_pairs",
])
def test_the_tokenizer_and_the_data_stages_do_not_import_torch(statement):
    assert "torch" not in _modules_after(statement)


def test_the_model_names_still_load_on_use():
    import bert_core
    from bert_core.model import BertForPreTraining

    assert bert_core.BertForPreTraining is BertForPreTraining
    assert "torch" in _modules_after("from bert_core import BertForPreTraining")
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        bert_core.Nope  # noqa: B018
