"""The standalone runner end to end on tiny generated data, and its errors on bad input."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from merbench_plugins.__main__ import main as cli
from merbench_plugins.data.synthetic import feature_name


def run_cli(*argv):
    return cli(["train", *map(str, argv), "--quiet", "--epochs", "2", "--folds", "2"])


def test_end_to_end_writes_summary_and_merbench_result_files(tiny_data, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_cli(tiny_data, "--model", "attention,attention_robust_v2", "--out", out) == 0
    table = capsys.readouterr().out
    assert "attention_robust_v2" in table and "test2 f1" in table
    summaries = sorted(glob.glob(str(out / "summary_attention_robust_v2_*.json")))
    assert len(summaries) == 1
    s = json.load(open(summaries[0]))
    assert set(s["tests"]) == {"test1", "test2", "test3"}
    assert len(s["folds"]) == 2 and all(f["best_epoch"] in (1, 2) for f in s["folds"])
    assert s["tests"]["test3"].get("val_mse") is None          # no valence in test3: not scored
    assert 0 <= s["tests"]["test1"]["f1"] <= 1
    assert s["settings"]["kl_weight"] == 0.01                  # registry default filled in
    results = sorted(os.path.basename(p) for p in glob.glob(str(out / "result" / "test1_*.npz")))
    assert len(results) == 2
    assert results[0].startswith("test1_features:" + "+".join(sorted(feature_name(m) for m in range(3))))
    assert "_dataset:MER2023_model:attention+utt+None_f1:" in results[0]
    assert glob.glob(str(out / "summary_*.md"))


def test_frames_flags_and_savemodel(tiny_data, tmp_path):
    out = tmp_path / "runs"
    assert run_cli(tiny_data, "--model", "attention_robust_v4", "--feat_type", "frm_unalign", "--no_contrastive",
                   "--kl_weight", "0.02", "--savemodel", "--out", out) == 0
    s = json.load(open(glob.glob(str(out / "summary_attention_robust_v4_*.json"))[0]))
    assert s["settings"]["use_contrastive"] is False and s["settings"]["kl_weight"] == 0.02
    assert all(os.path.isfile(f["checkpoint"]) for f in s["folds"])


def test_hyper_path_fills_what_the_command_line_leaves(tiny_data, tmp_path):
    hp = tmp_path / "hp.yaml"
    hp.write_text("attention_robust_v2:\n  kl_weight: 0.05\n  recon_weight: 0.0\n  lr: 0.002\n")
    out = tmp_path / "runs"
    assert run_cli(tiny_data, "--model", "attention_robust_v2", "--hyper_path", hp, "--recon_weight", "0.3",
                   "--out", out) == 0
    s = json.load(open(glob.glob(str(out / "summary_*.json"))[0]))["settings"]
    assert (s["kl_weight"], s["recon_weight"], s["lr"]) == (0.05, 0.3, 0.002)


def copy_data(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case,message", [
    ("unknown_model", "unknown model 'nope'; known models:"),
    ("missing_labels", "no label*.npz in"),
    ("missing_feature_dir", "feature folder not found:"),
    ("missing_feature_file", "missing feature file"),
    ("dim_mismatch", "has dim 5"),
    ("nan_feature", "non-finite values (NaN/inf)"),
    ("empty_corpus", "corpus in"),
])
def test_bad_input_one_line_error_nothing_written(tiny_data, tmp_path, capsys, case, message):
    data = copy_data(tiny_data, tmp_path / "data")
    feat_dir = data / "features" / feature_name(1)
    first = sorted(os.listdir(feat_dir))[0]
    model = "attention_robust_v2"
    if case == "unknown_model":
        model = "nope"
    elif case == "missing_labels":
        os.remove(data / "label-6way.npz")
    elif case == "missing_feature_dir":
        shutil.rmtree(feat_dir)
    elif case == "missing_feature_file":
        os.remove(feat_dir / first)
    elif case == "dim_mismatch":
        np.save(feat_dir / first, np.zeros(5, np.float32) + 1)
    elif case == "nan_feature":
        x = np.load(feat_dir / first)
        x[0] = np.nan
        np.save(feat_dir / first, x)
    elif case == "empty_corpus":
        labels = dict(np.load(data / "label-6way.npz", allow_pickle=True))
        labels["test1_corpus"] = np.array({}, dtype=object)
        np.savez(data / "label-6way.npz", **labels)
    out = tmp_path / "runs"
    code = run_cli(data, "--model", model, "--out", out)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_cli_help_lists_commands(capsys):
    assert cli(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli(["train", "--help"])
    assert e.value.code == 0
    assert "--no_proxy_attention" in capsys.readouterr().out


def test_atomic_writes_respect_umask(tmp_path):
    from merbench_plugins.evaluate import report
    old = os.umask(0o022)
    try:
        report.atomic_write_text(str(tmp_path / "a.md"), "x")
        report.atomic_save_npz(str(tmp_path / "b.npz"), x=np.zeros(1))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.md").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "b.npz").st_mode & 0o777 == 0o644


def test_integer_emotion_labels_count_classes_from_labels(tiny_data, tmp_path):
    from merbench_plugins.data.merbench_layout import MER2023_EMOTIONS, FeatureDataset
    data = copy_data(tiny_data, tmp_path / "data")
    labels = dict(np.load(data / "label-6way.npz", allow_pickle=True))
    for key in labels:
        corpus = labels[key].item()
        for name in corpus:
            corpus[name]["emo"] = MER2023_EMOTIONS.index(corpus[name]["emo"])
        labels[key] = np.array(corpus, dtype=object)
    np.savez(data / "label-6way.npz", **labels)
    ds = FeatureDataset(str(data), feature_name(0), feature_name(1), feature_name(2))
    assert ds.vocab == () and ds.num_classes == int(ds.load("train").emos.max()) + 1
