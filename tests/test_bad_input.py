"""Bad input never becomes a result (issue 23): refused before training, in one line naming the problem,
with no result file written; in both runners (standalone ``train`` and the installed ``main-robust.py``)."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from merbench_plugins import runtime
from merbench_plugins.__main__ import main as cli
from merbench_plugins.data.synthetic import feature_name
from test_merbench_runner import UTT_FEATURES, installed_tree, main_robust  # noqa: F401  (fixture)


def one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def spoil(data, case):
    """Damage a copy of the generated data the way a user's might be."""
    labels = dict(np.load(data / "label-6way.npz", allow_pickle=True))
    if case == "label_typo":                                   # one train label 'hapy'
        corpus = labels["train_corpus"].item()
        corpus[sorted(corpus)[3]]["emo"] = "hapy"
        labels["train_corpus"] = np.array(corpus, dtype=object)
        np.savez(data / "label-6way.npz", **labels)
    elif case in ("nan_test1_audio", "nan_train"):             # NaN in many files of one split
        split = "test1" if case == "nan_test1_audio" else "train"
        folder = data / "features" / feature_name(0 if split == "test1" else 1)
        for name in sorted(labels[f"{split}_corpus"].item())[:7]:
            x = np.load(folder / f"{name}.npy")
            x[..., 0] = np.nan
            np.save(folder / f"{name}.npy", x)


@pytest.mark.parametrize("case,flags,message", [
    ("lr_negative", ["--lr", "-0.01"], "--lr must lie in (0, inf), got -0.01"),
    ("lr_zero", ["--lr", "0"], "--lr must lie in (0, inf), got 0.0"),
    ("lr_zero_merbench", ["--lr", "0", "--protocol", "merbench"], "--lr must lie in (0, inf)"),
    ("epochs_zero", ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    ("epochs_negative", ["--epochs", "-3"], "--epochs must be >= 1, got -3"),
    ("batch_zero", ["--batch_size", "0"], "--batch_size must be >= 1"),
    ("dropout_one", ["--dropout", "1.0"], "--dropout must lie in [0, 1)"),
    ("yaml_typo", ["--hyper_path", "{yaml}"], "'dropuot' is not an option of attention_robust_v2; did you mean 'dropout'?"),
    ("folds_one", ["--folds", "1"], "--folds must be at least 2"),
    ("v2_probability", ["--modality_dropout", "1.5"], "--modality_dropout must lie in [0, 1], got 1.5"),
    ("mrg_temperature", ["--model", "mrg_net", "--tau_x", "0"], "--tau_x must lie in (0, inf), got 0.0"),
])
def test_impossible_settings_refused_before_reading_data(tmp_path, capsys, case, flags, message):
    """Checked when the command line is resolved: the data folder is not even looked at (it does not exist)."""
    (tmp_path / "hyper.yaml").write_text("attention_robust_v2:\n  dropuot: 0.3\n")
    flags = [f.replace("{yaml}", str(tmp_path / "hyper.yaml")) for f in flags]
    out = tmp_path / "runs"
    assert cli(["train", str(tmp_path / "no-such-data"), *flags, "--out", str(out)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("case,flags,message", [
    ("label_typo", [], "emotion label(s) 'hapy' are not in the dataset's emotion set (neutral, angry, happy, sad, "
                       "worried, surprise): samples"),
    ("nan_test1_audio", [], "non-finite values (NaN/inf) in the test1 features: audio 7 file(s)"),
    ("nan_train", [], "non-finite values (NaN/inf) in the train features: text 7 file(s)"),
])
def test_bad_data_refused_with_the_samples_named(tiny_data, tmp_path, capsys, case, flags, message):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    spoil(data, case)
    out = tmp_path / "runs"
    assert cli(["train", str(data), "--epochs", "1", "--quiet", *flags, "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert message in line and "(+" not in line.split("file(s)")[0]
    assert not out.exists()


def test_nonfinite_as_missing_is_counted(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    spoil(data, "nan_test1_audio")
    out = tmp_path / "runs"
    assert cli(["train", str(data), "--epochs", "1", "--quiet", "--folds", "2", "--nonfinite", "missing",
                "--out", str(out)]) == 0
    summary = json.load(open(glob.glob(str(out / "summary_attention_robust_v2_*.json"))[0]))
    assert summary["nonfinite"] == {"test1": {"audios": 7}}
    assert summary["config"]["nonfinite"] == "missing" and summary["config"]["source"]["nonfinite"] == "flag"


def test_unwritable_output_refused_before_training(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli(["train", str(tiny_data), "--epochs", "1", "--out", str(blocker / "runs")]) == 2
    assert "cannot write to the output folder" in one_line_error(capsys)


def test_fold_seeds_never_overlap_across_seeds():
    """Fold k of seed s has its own stream: no fold of seeds 0..9 shares a seed with another (seed + k did)."""
    seeds = [runtime.fold_seeds(s, 5) for s in range(10)]
    flat = [x for row in seeds for x in row]
    assert len(set(flat)) == len(flat)
    assert runtime.fold_seeds(3, 2) == runtime.fold_seeds(3, 5)[:2]        # independent of the number of folds


def test_summary_records_fold_seeds_and_where_values_came_from(tiny_data, tmp_path):
    out = tmp_path / "runs"
    assert cli(["train", str(tiny_data), "--epochs", "1", "--quiet", "--folds", "2", "--seed", "7",
                "--hidden_dim", "16", "--out", str(out)]) == 0
    summary = json.load(open(glob.glob(str(out / "summary_attention_robust_v2_*.json"))[0]))
    assert summary["fold_seeds"] == runtime.fold_seeds(7, 2)
    config = summary["config"]
    assert config["asked"]["hidden_dim"] == 16 and config["settings"]["hidden_dim"] == 16
    assert config["source"]["hidden_dim"] == "flag" and config["source"]["kl_weight"] == "default"
    assert config["source"]["audio_feature"] == "data:synthetic.json"
    assert config["training"]["epochs"] == 1 and config["source"]["training.optimizer"] == "protocol:ours"


# ------------------------------------------------------------------------------------------------- main-robust.py

@pytest.mark.parametrize("case,flags,message", [
    ("lr_negative", ["--lr", "-0.01"], "--lr must lie in (0, inf)"),
    ("lr_zero_merbench", ["--lr", "0", "--protocol", "merbench"], "--lr must lie in (0, inf)"),
    ("epochs_zero", ["--epochs", "0"], "--epochs must be >= 1"),
    ("yaml_typo", ["--hyper_path", "hyper.yaml"], "'dropuot' is not an option of attention_robust_v2"),
])
def test_main_robust_refuses_impossible_settings(installed_tree, tiny_data, case, flags, message):
    (installed_tree / "hyper.yaml").write_text("attention_robust_v2:\n  dropuot: 0.3\n")
    proc = main_robust(installed_tree, tiny_data, "--model", "attention_robust_v2", *UTT_FEATURES, *flags)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr[-2000:]
    assert message in proc.stderr
    assert not glob.glob(str(installed_tree / "saved*"))


def test_main_robust_merbench_model_yaml_keys_checked_against_its_grid(installed_tree, tiny_data):
    """MERBench's own models: a --hyper_path key their toolkit/model-tune.yaml grid never uses is refused."""
    (installed_tree / "hyper.yaml").write_text("attention:\n  hiden_dim: 64\n")
    proc = main_robust(installed_tree, tiny_data, "--model", "attention", *UTT_FEATURES, "--hyper_path", "hyper.yaml")
    assert proc.returncode == 2 and "'hiden_dim' is not an option of attention; did you mean 'hidden_dim'?" in proc.stderr


@pytest.mark.parametrize("split", ["test1", "train"])
def test_main_robust_refuses_nonfinite_features(installed_tree, tiny_data, tmp_path, split):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    spoil(data, "nan_test1_audio" if split == "test1" else "nan_train")
    proc = main_robust(installed_tree, data, "--model", "attention_robust_v2", *UTT_FEATURES)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: non-finite values (NaN/inf) in the {split} features" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not glob.glob(str(installed_tree / "saved-trimodal" / "result" / "*.npz"))
    proc = main_robust(installed_tree, data, "--model", "attention_robust_v2", *UTT_FEATURES, "--nonfinite", "missing")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.load(open(glob.glob(str(installed_tree / "saved-trimodal" / "summary" / "*.json"))[0]))
    assert summary["nonfinite"] == {split: {"audios" if split == "test1" else "texts": 7}}


def test_main_robust_unwritable_save_root(installed_tree, tiny_data):
    (installed_tree / "blocker").write_text("a file")
    proc = main_robust(installed_tree, tiny_data, "--model", "attention_robust_v2", *UTT_FEATURES,
                       "--save_root", "blocker/saved")
    assert proc.returncode == 2 and "cannot write to the output folder" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------- killed runs

def test_a_killed_run_leaves_nothing_in_place_and_its_rerun_cleans_up(tmp_path):
    """Files are staged and moved together (summaries last); a run that died leaves only its staging folder,
    which the next run in the folder removes, undoing any files it had already moved (its manifest)."""
    import subprocess
    import sys
    from merbench_plugins import fileio
    out = tmp_path / "runs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                            # a pid that no longer runs
    import socket
    stale = out / f"{fileio.STAGING_PREFIX}{socket.gethostname()}-{dead.pid}-1"
    (stale / "result").mkdir(parents=True)
    (stale / "result" / "test2.npz").write_bytes(b"staged, never placed")
    (stale / "summary_x.json").write_text("{}")
    (out / "result").mkdir()
    (out / "result" / "test1.npz").write_bytes(b"moved before the kill")
    (stale / fileio.MANIFEST).write_text(json.dumps([str(out / "result" / "test1.npz"), str(out / "result" / "test2.npz"),
                                                     str(out / "summary_x.json")]))
    alive = out / f"{fileio.STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-2"     # a live run's: left alone
    alive.mkdir()
    with fileio.StagedOutputs(str(out)) as stage:
        assert not stale.exists() and alive.exists()
        assert not (out / "result" / "test1.npz").exists()                # the dead run's half result undone
        staged, final = stage.new("result/test1.npz")
        open(staged, "w").write("new")
        assert not os.path.exists(final)                                   # nothing in place before the end
    assert open(final).read() == "new" and sorted(os.listdir(out)) == sorted(["result", alive.name])
    with pytest.raises(RuntimeError):
        with fileio.StagedOutputs(str(out)) as stage:
            open(stage.new("result/test9.npz")[0], "w").write("half")
            raise RuntimeError("killed")
    assert not (out / "result" / "test9.npz").exists() and sorted(os.listdir(out)) == sorted(["result", alive.name])


def test_rerun_after_a_run_died_before_its_summary_leaves_one_set_of_results(tiny_data, tmp_path, monkeypatch):
    from merbench_plugins.evaluate import report
    out = tmp_path / "runs"
    flags = ["train", str(tiny_data), "--epochs", "1", "--quiet", "--folds", "2", "--out", str(out)]
    real = report.write_json

    def die(path, obj):
        raise KeyboardInterrupt("killed before the summary")
    monkeypatch.setattr(report, "write_json", die)
    with pytest.raises(KeyboardInterrupt):
        cli(flags)
    assert not glob.glob(str(out / "result" / "*.npz"))                       # its result files never in place
    monkeypatch.setattr(report, "write_json", real)
    assert cli(flags) == 0
    assert len(glob.glob(str(out / "result" / "*.npz"))) == 3                 # test1..test3 of the rerun only
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_every_declared_interval_holds_its_default_and_refuses_outside():
    """Each registered model's options with an interval: the declared default lies inside it, and a value
    just outside is refused by the config's check(), naming the option."""
    import dataclasses
    import math
    from merbench_plugins.config import in_interval
    from merbench_plugins.registry import get_model_entry, list_models
    seen = 0
    for name in list_models():
        cls = get_model_entry(name).config
        for f in dataclasses.fields(cls):
            interval = f.metadata.get("interval")
            if not interval:
                continue
            seen += 1
            assert in_interval(f.default, interval), (name, f.name)
            lo, hi = (float(x) for x in interval[1:-1].split(","))
            bad = lo - 1 if interval[0] == "[" else lo
            if math.isinf(bad):
                bad = hi + 1 if interval[-1] == "]" else hi
            with pytest.raises(ValueError, match=f"--{f.name} must lie in"):
                cls(**{f.name: type(f.default)(bad)}).check()
    assert seen >= 40
