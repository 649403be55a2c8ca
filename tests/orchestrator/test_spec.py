"""Search-space validation, overrides and grid expansion (no Ray)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml

from contract.config import BatchScaling, ComputeConfig
from orchestrator.cli import main
from orchestrator.spec import SpecError, load_spec, parse_override

GOOD = """
name: demo
data: {source: synthetic, synthetic_train_size: 200}
model: {from_scratch: true, tokenizer: wordpiece}
compute: {global_batch_size: 8}
train: {epochs: 1, lr: 1e-3}
axes:
  model.name: [bert-tiny, bert-mini]
  data.train_fraction: [0.5, 1.0]
  compute.num_workers: [1, 2]
seeds: [0, 1]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_expands_to_the_full_grid(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert len(spec.trials) == 2 * 2 * 2 * 2
    cells = {
        (t.model.name, t.data.train_fraction, t.compute.num_workers, t.train.seed)
        for t in spec.trials
    }
    assert len(cells) == 16
    assert {t.train.lr for t in spec.trials} == {1e-3}  # "1e-3" is a float, not a string
    assert spec.axis_names() == [
        "model.name",
        "data.train_fraction",
        "compute.num_workers",
        "train.seed",
    ]


def test_param_space_puts_grid_searches_at_the_axis_leaves(tmp_path):
    space = load_spec(write(tmp_path, GOOD)).param_space()
    assert space["model"]["name"] == {"grid_search": ["bert-tiny", "bert-mini"]}
    assert space["train"]["seed"] == {"grid_search": [0, 1]}
    assert space["train"]["lr"] == 1e-3
    assert space["compute"]["batch_scaling"] == "strong"  # resolved defaults travel too


# GOOD's settings, with axes as two grids.
GRIDS = (
    GOOD.split("axes:")[0]
    + """axes:
  - model.name: [bert-tiny, bert-mini]
    data.train_fraction: [0.5, 1.0]
  - model.name: [bert-mini]
    data.train_fraction: [1.0]
    compute.num_workers: [1, 2]
    seeds: [0, 1]
"""
)


def test_a_list_of_grids_is_their_union_each_shared_cell_once(tmp_path):
    spec = load_spec(write(tmp_path, GRIDS))
    cells = [
        (t.model.name, t.data.train_fraction, t.compute.num_workers, t.train.seed)
        for t in spec.trials
    ]
    # 4 cells x seed 0, then bert-mini at 100 % on 1 and 2 workers x seeds 0 and 1; the
    # (bert-mini, 1.0, 1 worker, seed 0) trial is in both grids and runs once.
    assert len(cells) == len(set(cells)) == 4 + 4 - 1
    assert ("bert-mini", 1.0, 2, 1) in cells and ("bert-tiny", 1.0, 2, 0) not in cells
    assert spec.axes == {
        "model.name": ["bert-tiny", "bert-mini"],
        "data.train_fraction": [0.5, 1.0],
        "compute.num_workers": [1, 2],
    }
    assert spec.all_seeds() == [0, 1]
    assert spec.points() == [t.model_dump(mode="json") for t in spec.trials]
    # spec.yaml, as an experiment keeps it, reads back into the same sweep.
    again = write(tmp_path, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    assert load_spec(again).trials == spec.trials


def test_overrides_apply_to_every_grid(tmp_path):
    path = write(tmp_path, GRIDS)
    # A fixed value removes the axis from every grid: the shared cells collapse.
    spec = load_spec(path, ["compute.num_workers=1"])
    assert {t.compute.num_workers for t in spec.trials} == {1} and len(spec.trials) == 5
    spec = load_spec(path, ["axes.data.train_fraction=[0.25]"])
    assert {t.data.train_fraction for t in spec.trials} == {0.25}
    # Seeds on the command line are every grid's seeds.
    spec = load_spec(path, ["seeds=[5]"])
    assert {t.train.seed for t in spec.trials} == {5} and len(spec.trials) == 5


def test_plan_counts_each_grid(tmp_path, capsys):
    assert main(["plan", str(write(tmp_path, GRIDS))]) == 0
    out = capsys.readouterr().out
    assert "7 trials (2 x 2 cells x 1 seeds + 1 x 1 x 2 cells x 2 seeds, 1 in more than" in out


def test_overrides_set_values_and_replace_axes(tmp_path):
    path = write(tmp_path, GOOD)
    spec = load_spec(path, ["train.lr=3e-5", "compute.num_workers=2", "seeds=[7]"])
    assert {t.train.lr for t in spec.trials} == {3e-5}
    assert {t.compute.num_workers for t in spec.trials} == {2}
    assert "compute.num_workers" not in spec.axes
    assert len(spec.trials) == 4
    spec = load_spec(path, ["axes.model.name=[bert-small]"])
    assert {t.model.name for t in spec.trials} == {"bert-small"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nmodle: {}\n", "unknown key 'modle'; did you mean 'model'?"),
        (
            "name: x\nmodel: {nmae: bert-tiny}\n",
            "unknown key 'model.nmae'; did you mean 'model.name'?",
        ),
        (
            "name: x\naxes: {model.nme: [a]}\n",
            "unknown axis 'model.nme'; did you mean 'model.name'?",
        ),
        ("name: x\naxes: {model.name: []}\n", "axes.model.name must be a non-empty list"),
        ("name: x\naxes: {model.name: bert-tiny}\n", "axes.model.name must be a non-empty list"),
        (
            "name: x\ndata: {train_fraction: 1.5}\n",
            "data.train_fraction: Input should be less than or equal to 1",
        ),
        ("name: x\naxes: {data.train_fraction: [0.5, 0]}\n", "greater than 0"),
        (
            "name: x\ncompute: {global_batch_size: 32}\naxes: {compute.num_workers: [1, 3]}\n",
            "global_batch_size 32 does not divide by num_workers 3",
        ),
        (
            "name: x\ncompute: {batch_scaling: weak}\n",
            "batch_scaling 'weak' needs per_worker_batch_size",
        ),
        (
            "name: x\ncompute: {batch_scaling: medium}\n",
            "compute.batch_scaling: Input should be 'strong' or 'weak'",
        ),
        ("name: x\ndata: {source: glue, task: mrcp}\n", "task 'mrcp' is not a GLUE task"),
        (
            "name: x\ndata: {source: files, train_file: a.csv}\n",
            "needs train_file and validation_file",
        ),
        ("name: x\ntrain: {precision: bf16}\n", "train.precision bf16 needs compute.use_gpu: true"),
        ("name: x\ntrain: {epochs: two}\n", "train.epochs: Input should be a valid integer"),
        (
            "name: x\nmodel: {name: bert-tinny}\n",
            "unknown model 'bert-tinny'; did you mean 'bert-tiny'?",
        ),
        (
            "name: x\nmodel: {name: ./no/such/dir}\n",
            "local model directory './no/such/dir' not found",
        ),
        (
            "name: x\nmodel: {name: bert-tiny, num_layers: 5}\n",
            "num_layers=5 exceeds the 2 layers of bert-tiny",
        ),
        ("name: x\nseeds: []\n", "'seeds' must be a non-empty list of integers"),
        ("name: x\nseeds: [1, 1]\n", "'seeds' repeats a value"),
        ("name: x\ntrain: {seed: 3}\n", "list the seeds under 'seeds' instead"),
        ("name: 'a b'\n", "'name' must be a word"),
        ("data: {}\n", "'name' must be a word"),
        ("name: x\nmodel: [1, 2]\n", "'model' must be a mapping"),
        ("name: x\nmodel: {name: bert-tiny\n", "malformed YAML (line"),
        ("- just\n- a list\n", "expected a mapping"),
        (
            "name: x\nmax_concurrent_trials: 0\n",
            "'max_concurrent_trials' must be a positive integer",
        ),
        ("name: x\ntrial_retries: -1\n", "'trial_retries' must be an integer >= 0 (got -1)"),
        ("name: x\nmax_trials: 0\n", "'max_trials' must be a positive integer (got 0)"),
        ("name: x\nstorage_path: {a: 1}\n", "'storage_path' must be a directory or a URI"),
        ("name: x\n1: 2\n", "unknown key 1; valid:"),
        ("name: x\naxes: {1: [2]}\n", "axes: 1 is not a setting name"),
        ("name: x\naxes: [[1]]\n", "'axes' must map setting names to lists of values, or be"),
        ("name: x\naxes: 3\n", "'axes' must map setting names to lists of values, or be"),
        (
            "name: x\naxes: [{train.epochs: [1]}, {train.epochs: 2}]\n",
            "axes[1].train.epochs must be a non-empty list",
        ),
        ("name: x\naxes: [{seeds: [0, 0]}]\n", "axes[0].seeds repeats a value"),
        ("name: x\naxes: [{seeds: []}]\n", "axes[0].seeds must be a non-empty list of integers"),
        ("name: x\nmodel: {name: .}\n", "local model directory '.' has no config.json"),
        (
            "name: x\ntrain: {progress_timeout_s: 0}\n",
            "train.progress_timeout_s: Input should be greater than 0",
        ),
        (
            "name: x\ninference: {batch_sizes: [1, 0]}\n",
            "inference.batch_sizes.1: Input should be greater than or equal to 1",
        ),
        ("name: x\ninference: {batch_sizes: [1, 1]}\n", "batch_sizes repeats a value: [1, 1]"),
        ("name: x\ninference: {batch_sizes: []}\n", "needs at least one batch size"),
        ("name: x\ninference: {batch_sizes: 32}\n", "inference.batch_sizes: Input should be"),
        (
            "name: x\ninference: {max_examples: 0}\n",
            "inference.max_examples: Input should be greater than or equal to 1",
        ),
        (
            "name: x\ninference: {warmup_steps: -1}\n",
            "inference.warmup_steps: Input should be greater than or equal to 0",
        ),
        (
            "name: x\ninference: {batchsizes: [1]}\n",
            "unknown key 'inference.batchsizes'; did you mean 'inference.batch_sizes'?",
        ),
        ("name: x\ninference: [1]\n", "'inference' must be a mapping"),
        (
            "name: x\ntrain: {eval_every_steps: 0}\n",
            "train.eval_every_steps: Input should be greater than or equal to 1",
        ),
        (
            "name: x\ntrain: {convergence_fraction: 1.5}\n",
            "train.convergence_fraction: Input should be less than or equal to 1",
        ),
        (
            "name: x\ntrain: {target: 80}\n",
            "train.target 80.0 is outside the range of accuracy (0 to 1); give it as a fraction",
        ),
        (
            "name: x\ncompute: {peak_tflops: 0}\n",
            "compute.peak_tflops: Input should be greater than 0",
        ),
    ],
)
def test_bad_files_give_one_line_errors_and_exit_2(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text
    assert main(["plan", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {text}\n"  # one line, no traceback


def test_error_names_the_grid_cell(tmp_path):
    path = write(
        tmp_path, "name: x\ncompute: {global_batch_size: 8}\naxes: {compute.num_workers: [1, 3]}\n"
    )
    with pytest.raises(SpecError, match=r"\[in grid cell compute.num_workers=3, train.seed=0\]"):
        load_spec(path)


def _plan_error(capsys, *args: str) -> str:
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_binary_spec_file_or_a_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "space.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert "not a UTF-8 text file" in _plan_error(capsys, str(tmp_path / "space.yaml"))
    assert "is a directory; give a search-space YAML file" in _plan_error(capsys, str(tmp_path))


def test_a_huge_grid_fails_fast_before_expanding(tmp_path, capsys):
    axes = ", ".join(
        f"{a}: [{', '.join(str(v) for v in range(1, 101))}]"
        for a in ("train.epochs", "compute.global_batch_size", "data.max_length")
    )
    path = write(tmp_path, f"name: x\naxes: {{{axes}}}\n")
    started = time.monotonic()
    err = _plan_error(capsys, str(path))
    assert time.monotonic() - started < 5
    assert "the grid has 1,000,000 trials (100 train.epochs x 100 compute.global_batch_size" in err
    assert "more than max_trials 5,000" in err
    # The limit is a setting: raised in the file or on the command line.
    small = write(tmp_path, "name: x\naxes: {train.epochs: [1, 2, 3]}\nseeds: [0, 1]\n")
    assert "6 trials" in _plan_error(capsys, str(small), "max_trials=5")
    assert load_spec(small, ["max_trials=6"]).max_trials == 6
    assert load_spec(small, ["max_trials=6"]).to_dict()["max_trials"] == 6


def test_local_model_directories_need_a_config_and_a_tokenizer(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    space = write(tmp_path, f"name: x\nmodel: {{name: {model}}}\n")
    assert "has no config.json" in _plan_error(capsys, str(space))
    (model / "config.json").write_text("[1]")
    assert "config.json: not a model config" in _plan_error(capsys, str(space))
    (model / "config.json").write_text('{"model_type": "bert"}')
    assert "has no tokenizer files (tokenizer.json" in _plan_error(capsys, str(space))
    # A model trained from scratch, or with a tokenizer of its own, needs none.
    load_spec(space, ["model.from_scratch=true"])
    load_spec(space, ["model.tokenizer=wordpiece"])
    (model / "vocab.txt").write_text("[PAD]\n")
    assert load_spec(space).trials[0].model.name == str(model)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "local tokenizer directory" in _plan_error(
        capsys, str(space), f"model.tokenizer={empty}"
    )


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(SpecError, match="no such search-space file"):
        load_spec(tmp_path / "nope.yaml")
    path = write(tmp_path, GOOD)
    with pytest.raises(SpecError, match=r"unknown setting 'train\.lrr'; did you mean 'train\.lr'"):
        load_spec(path, ["train.lrr=1"])
    with pytest.raises(SpecError, match="not of the form key=value"):
        load_spec(path, ["train.lr"])


def test_parse_override_reads_yaml_values():
    assert parse_override("train.lr=3e-5") == ("train.lr", 3e-5)
    assert parse_override("axes.compute.num_workers=[1, 2]") == ("axes.compute.num_workers", [1, 2])
    assert parse_override("compute.use_gpu=true") == ("compute.use_gpu", True)
    assert parse_override("model.name=bert-base") == ("model.name", "bert-base")


@pytest.mark.parametrize(
    ("scaling", "workers", "per_worker", "global_", "micro", "accum"),
    [
        ({"global_batch_size": 32}, 1, 32, 32, 32, 1),
        ({"global_batch_size": 32}, 4, 8, 32, 8, 1),
        ({"global_batch_size": 64, "max_micro_batch_size": 16}, 2, 32, 64, 16, 2),
        ({"batch_scaling": "weak", "per_worker_batch_size": 16}, 4, 16, 64, 16, 1),
    ],
)
def test_batch_arithmetic(scaling, workers, per_worker, global_, micro, accum):
    compute = ComputeConfig(num_workers=workers, **scaling)
    assert compute.per_worker_batch() == per_worker
    assert compute.global_batch() == global_
    assert compute.micro_batch() == micro
    assert compute.accumulation_steps() == accum
    if compute.batch_scaling is BatchScaling.strong:
        assert compute.global_batch() == scaling["global_batch_size"]


def test_trial_resources_are_the_whole_gang():
    compute = ComputeConfig(num_workers=4, use_gpu=True, cpus_per_worker=2, gpus_per_worker=1)
    assert compute.worker_resources() == {"CPU": 2, "GPU": 1}
    assert compute.trial_resources() == {"CPU": 8, "GPU": 4}


@pytest.mark.parametrize(
    ("batch", "halvings"),
    [
        # per-worker batch, micro-batch limit -> micro-batches of each OOM retry until single
        ({"global_batch_size": 32}, [16, 8, 4, 2, 1]),
        ({"global_batch_size": 24, "max_micro_batch_size": 12}, [6, 3, 1]),
        ({"global_batch_size": 10, "max_micro_batch_size": 5}, [2, 1]),
    ],
)
def test_half_micro_batch_keeps_the_per_worker_batch(batch, halvings):
    compute = ComputeConfig(**batch)
    seen = []
    while (compute := compute.with_half_micro_batch()) is not None:
        assert compute.per_worker_batch() == batch["global_batch_size"]
        assert compute.micro_batch() * compute.accumulation_steps() == compute.per_worker_batch()
        seen.append(compute.micro_batch())
    assert seen == halvings


def test_inference_settings_are_a_section_and_an_axis(tmp_path):
    path = write(tmp_path, GOOD + "inference: {batch_sizes: [1, 8], max_examples: 64}\n")
    spec = load_spec(path, ["inference.warmup_steps=2", "axes.inference.enabled=[true, false]"])
    assert {t.inference.batch_sizes for t in spec.trials} == {(1, 8)}
    assert {t.inference.warmup_steps for t in spec.trials} == {2}
    assert {t.inference.enabled for t in spec.trials} == {True, False}
    space = spec.param_space()
    assert space["inference"]["batch_sizes"] == [1, 8]
    assert space["inference"]["enabled"] == {"grid_search": [True, False]}
    resolved = {"batch_sizes": [1, 8], "max_examples": 64, "warmup_steps": 2}
    assert spec.to_dict()["inference"] == resolved
