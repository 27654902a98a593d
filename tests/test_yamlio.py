"""Hyperparameter YAML is read as MERBench reads it (OmegaConf): scientific notation is a float."""
from pathlib import Path

import pytest

from merbench_plugins import yamlio
from merbench_plugins.train import options

FIXTURE_YAML = Path(__file__).resolve().parent / "fixtures" / "merbench_tree" / "toolkit" / "model-tune.yaml"
UPSTREAM_YAML = Path("/work/upstream/MERBench/toolkit/model-tune.yaml")


@pytest.mark.parametrize("text,value", [
    ("1e-3", 1e-3), ("5e-4", 5e-4), ("1E-5", 1e-5), (".5e-3", 5e-4), ("+1e-3", 1e-3), ("-1e-3", -1e-3),
    ("1e3", 1000.0), ("1.0e-05", 1e-5), ("1.e-4", 1e-4), ("2.5E+2", 250.0), ("-1.0", -1.0), ("0.35", 0.35),
    (".5", 0.5), ("+.5", 0.5), ("1_000.5", 1000.5), (".inf", float("inf"))])
def test_floats_in_every_form(text, value):
    got = yamlio.safe_load(f"lr: {text}")["lr"]
    assert type(got) is float and got == value


@pytest.mark.parametrize("text,value", [
    ("10", 10), ("-1", -1), ("0", 0), ("true", True), ("'1e-3'", "1e-3"), ("1.2.3", "1.2.3"), ("e5", "e5"),
    ("1e", "1e"), ("attnpool", "attnpool"), ("256,128", "256,128"), ("null", None)])
def test_other_scalars_keep_their_types(text, value):
    got = yamlio.safe_load(f"x: {text}")["x"]
    assert type(got) is type(value) and got == value


def test_grid_lists_and_hyper_path_files(tmp_path):
    grid = yamlio.safe_load("tfn:\n  hidden_dim: [64, 128]\n  grad_clip: [-1.0]\n  lr: [1e-3, 1e-4]\n")["tfn"]
    assert grid == {"hidden_dim": [64, 128], "grad_clip": [-1.0], "lr": [1e-3, 1e-4]}
    hp = tmp_path / "hp.yaml"
    hp.write_text("mult:\n  lr: 5e-4\n  layers: 4\n")
    assert options.load_yaml(str(hp)) == {"mult": {"lr": 5e-4, "layers": 4}}


@pytest.mark.parametrize("path", [FIXTURE_YAML, UPSTREAM_YAML])
def test_merbench_grids_have_float_learning_rates(path):
    if not path.exists():
        pytest.skip(f"{path} not here")
    table = options.load_yaml(str(path))
    assert table and all(isinstance(v, float) for grid in table.values() for v in grid.get("lr", []))
