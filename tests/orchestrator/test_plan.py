"""`plan`: parameter estimates, example counts and the printed table (no Ray)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contract.config import DataConfig
from contract.datafiles import DataError
from orchestrator.cli import main
from orchestrator.plan import bert_parameter_counts, plan_rows, train_split_size
from orchestrator.spec import load_spec

GLUE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE files not at {GLUE_DIR}")


def test_bert_base_parameter_count_matches_the_published_model():
    total, non_embedding = bert_parameter_counts(layers=12, hidden=768, vocab=30522, num_labels=2)
    assert total == 109_483_778  # BertForSequenceClassification(bert-base-uncased, 2 labels)
    assert total - non_embedding == (30522 + 512 + 2) * 768


@needs_glue
def test_glue_train_sizes_from_local_files():
    assert train_split_size(DataConfig(source="glue", task="mrpc", glue_dir=str(GLUE_DIR))) == 3668
    assert train_split_size(DataConfig(source="glue", task="cola", glue_dir=str(GLUE_DIR))) == 8551


def test_missing_glue_files_are_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"MRPC/train.tsv not found; glue_dir"):
        train_split_size(DataConfig(source="glue", task="mrpc", glue_dir=str(tmp_path)))


def test_plan_rows_use_nested_fraction_sizes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent("""
        name: s
        data: {source: synthetic, synthetic_train_size: 1000}
        model: {from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 1000}
        axes: {data.train_fraction: [0.1, 0.25, 1.0]}
    """)
    )
    rows = plan_rows(load_spec(path))
    assert [r.train_examples for r in rows] == [100, 250, 1000]
    assert (
        rows[0].params_total
        == bert_parameter_counts(layers=2, hidden=128, vocab=1000, num_labels=2)[0]
    )


def test_plan_command_prints_the_table(capsys):
    space = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    assert main(["plan", str(space)]) == 0
    out = capsys.readouterr().out
    assert "bert-tiny-L2·f1·w2·s1" in out  # the compute grid's second seed
    assert "12 trials (3 x 3 cells x 1 seeds + 1 x 1 x 2 cells x 2 seeds" in out


def test_plan_imports_neither_ray_nor_torch():
    code = (
        "import sys; from orchestrator.cli import main; main(['plan', sys.argv[1]]); "
        "heavy = {'ray', 'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    )
    space = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    subprocess.run([sys.executable, "-c", code, str(space)], check=True, capture_output=True)


def test_cli_user_error_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {lr: -1}\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.lr" in err and "Traceback" not in err
