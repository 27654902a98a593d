"""Every model of the fixture tree's MODEL_MAP (MERBench-shaped stand-ins, settings drawn from its
model-tune.yaml as main-release.py does) trains one epoch through the installed main-robust.py."""
import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from merbench_plugins.installer import cli as install_cli

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "merbench_tree"
FRAME_ONLY = {"mfn", "graph_mfn", "mfm", "mctn", "mult"}     # MERBench's MODEL_MAP comments: frames only


def fixture_models():
    """The names in the fixture's MODEL_MAP literal (so a model added there is tested here)."""
    tree = ast.parse((FIXTURE / "toolkit" / "models" / "__init__.py").read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MODEL_MAP")
    return [k.value for k in node.value.keys]


MODELS = fixture_models()
RUNS = [(m, "frm_align" if m in FRAME_ONLY else "utt") for m in MODELS] + [("mult", "frm_unalign"), ("tfn", "frm_align")]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("mb") / "MERBench"
    shutil.copytree(FIXTURE, root)
    assert install_cli.main([str(root)]) == 0
    return root


def main_robust(root, data, model, feat_type, *extra):
    level = "UTT" if feat_type == "utt" else "FRA"
    env = dict(os.environ, MERBENCH_FIXTURE_DATA=str(data), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    save = root / f"saved-{model}-{feat_type}-{len(extra)}"
    cmd = [sys.executable, "main-robust.py", "--dataset", "MER2023", "--gpu", "-1", "--epochs", "1", "--quiet",
           "--threads", "1", "--model", model, "--feat_type", feat_type, "--save_root", str(save),
           "--audio_feature", f"chinese-hubert-large-{level}", "--text_feature", f"Baichuan-13B-Base-{level}",
           "--video_feature", f"clip-vit-large-patch14-{level}", *extra]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return proc, Path(str(save) + "-trimodal")


def test_fixture_map_has_merbench_models():
    assert {"attention", "tfn", "lmf", "misa", "mmim", "mult", "mfn", "graph_mfn", "mfm", "mctn"} <= set(MODELS)


@pytest.mark.parametrize("model,feat_type", RUNS)
def test_every_merbench_model_trains_one_epoch(tree, tiny_data, model, feat_type):
    proc, out = main_robust(tree, tiny_data, model, feat_type)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"settings of {model}: drawn from toolkit/model-tune.yaml" in proc.stdout
    results = sorted(os.path.basename(p) for p in glob.glob(str(out / "result" / "test*.npz")))
    assert len(results) == 3 and all(f"_model:{model}+{feat_type}+None_f1:" in r for r in results)
    summary = json.load(open(glob.glob(str(out / "summary" / "*.json"))[0]))
    assert summary["protocol"]["protocol"] == "ours" and all(f["best_epoch"] == 1 for f in summary["folds"])


def test_frame_only_model_on_utterances_says_what_to_use(tree, tiny_data):
    proc, _ = main_robust(tree, tiny_data, "mfn", "utt")
    assert proc.returncode != 0 and "--feat_type frm_align" in proc.stderr


def test_merbench_protocol_end_to_end(tree, tiny_data):
    proc, out = main_robust(tree, tiny_data, "tfn", "utt", "--protocol", "merbench", "--epochs", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(glob.glob(str(out / "summary" / "*.json"))[0]))
    p = summary["protocol"]
    assert (p["protocol"], p["optimizer"], p["l2"], p["scheduler"], p["early_stop"], p["epochs"], p["average"]) == \
        ("merbench", "adam", 1e-5, "none", 0, 3, "logits")
    assert all(len(f["history"]) == 3 and len({h["lr"] for h in f["history"]}) == 1 for f in summary["folds"])
    names = sorted(os.path.basename(p).split("_")[0] for p in glob.glob(str(out / "result" / "*.npz")))
    assert names == ["cv", "test1", "test2", "test3"]


@pytest.mark.parametrize("model", ["attention", "tfn", "lmf", "misa", "mmim"])
def test_robust_recipe_trains_merbench_own_models(tree, tiny_data, model):
    """--robust_recipe: MERBench's own models train on corrupted / modality-dropped batches (issue 21)."""
    proc, out = main_robust(tree, tiny_data, model, "utt", "--robust_recipe", "--recipe_dropout", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(glob.glob(str(out / "summary" / "*.json"))[0]))
    assert summary["protocol"]["robust_recipe"] is True and summary["protocol"]["recipe_dropout"] == 0.5
    assert len(glob.glob(str(out / "result" / "test*.npz"))) == 3


def test_robust_recipe_leaves_our_models_alone(tree, tiny_data):
    proc, _ = main_robust(tree, tiny_data, "attention_robust_v2", "utt", "--robust_recipe", "--hidden_dim", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs the same recipe inside its forward" in proc.stdout
