"""Which settings a run gets: declared defaults unless --tune / --tune_yaml (issue 12, item 1)."""
import glob
import json

import numpy as np
import pytest

from merbench_plugins import registry
from merbench_plugins.train import merbench_runner, options, runner
from merbench_plugins.train.run_config import ConfigError, tune_source
from test_merbench_runner import installed_tree, main_robust  # noqa: F401  (fixture)


def ns(**kw):
    base = dict(hyper_path=None, tune_yaml=None, tune=False)
    base.update(kw)
    return base


def test_tune_source_defaults_unless_asked():
    assert tune_source(ns(), "attention_robust_v2", "grid.yaml") is None
    assert tune_source(ns(tune=True), "attention_robust_v2", "grid.yaml") == "grid.yaml"
    assert tune_source(ns(tune_yaml="mine.yaml"), "attention_robust_v2", "grid.yaml") == "mine.yaml"
    assert tune_source(ns(hyper_path="fixed.yaml", tune=True), "mrg_net", "grid.yaml") is None
    # MERBench's own models keep main-release.py's random pick
    assert tune_source(ns(), "tfn", "grid.yaml", draw_by_default=not options.ours("tfn")) == "grid.yaml"
    assert options.ours("attention_robust_v4") and options.ours("mrg_net") and not options.ours("attention")
    with pytest.raises(ConfigError, match="--tune needs a grid"):
        tune_source(ns(tune=True), "attention_robust_v2", None)


def resolve(*argv):
    return runner.resolve(runner.build_parser(), [str(a) for a in argv])


def test_standalone_defaults_and_tune(tiny_data, tmp_path):
    cfg = resolve(tiny_data)[0]
    assert cfg.settings == registry.model_defaults("attention_robust_v2") and cfg.settings_from == "declared defaults"
    assert set(cfg.source[k] for k in cfg.settings) == {"default"}
    grid = tmp_path / "grid.yaml"
    grid.write_text("attention_robust_v2:\n  lr: [0.0003]\n  hidden_dim: [48]\n")
    cfg = resolve(tiny_data, "--tune", "--tune_yaml", grid)[0]
    assert (cfg.settings["lr"], cfg.settings["hidden_dim"], cfg.training.lr) == (0.0003, 48, 0.0003)
    assert cfg.source["hidden_dim"] == f"grid:{grid}" and cfg.source["dropout"] == "default"
    assert cfg.asked["tune"] is True and "hidden_dim" not in cfg.asked
    cfg = resolve(tiny_data, "--tune", "--tune_yaml", grid, "--hidden_dim", "32")[0]     # a flag beats the grid
    assert (cfg.settings["hidden_dim"], cfg.source["hidden_dim"]) == (32, "flag")
    with pytest.raises(ConfigError, match="no entry for model 'mrg_net'"):
        resolve(tiny_data, "--tune", "--tune_yaml", grid, "--model", "mrg_net")


def test_main_robust_default_command_uses_declared_defaults(installed_tree, tiny_data):  # noqa: F811
    feats = ["--audio_feature", "chinese-hubert-large-UTT", "--text_feature", "Baichuan-13B-Base-UTT",
             "--video_feature", "clip-vit-large-patch14-UTT", "--feat_type", "utt"]
    proc = main_robust(installed_tree, tiny_data, "--model", "attention_robust_v4", "--epochs", "1", *feats)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "settings of attention_robust_v4: declared defaults" in proc.stdout
    summary = json.load(open(glob.glob(str(installed_tree / "saved-trimodal" / "summary" / "*.json"))[0]))
    assert summary["settings"] == registry.model_defaults("attention_robust_v4")
    # result npz: MERBench's args plus names and fold-averaged predictions; per missing pattern in the summary
    npz = np.load(glob.glob(str(installed_tree / "saved-trimodal" / "result" / "test2_*.npz"))[0], allow_pickle=True)
    assert npz["args"].item().model == "attention_robust_v4"
    assert npz["emoprobs"].shape == (len(npz["names"]), 6) and len(npz["valpreds"]) == len(npz["names"])
    assert np.allclose(npz["emoprobs"].sum(1), 1.0, atol=1e-5)
    groups = summary["tests_by_condition"]["test2"]
    assert "all" in groups and any(g.startswith("present:") for g in groups)
    assert sum(v["n"] for g, v in groups.items() if g != "all") == groups["all"]["n"]
    (installed_tree / "other.yaml").write_text("tfn:\n  lr: [0.001]\n")
    proc = main_robust(installed_tree, tiny_data, "--model", "mrg_net", "--tune_yaml", "other.yaml", *feats)
    assert proc.returncode != 0 and "has no entry for model 'mrg_net'" in proc.stderr
    assert merbench_runner.build_parser().parse_args(["--tune"]).tune


def test_flags_page_names_the_declared_defaults():
    """docs/flags.md writes model options as `--name value`: each value is some registered model's declared
    default (a stale `--kl_warmup 10` stood there after the default became 0)."""
    import os
    import re
    from merbench_plugins.registry import list_models, model_defaults
    defaults = {}
    for model in list_models():
        for key, value in model_defaults(model).items():
            defaults.setdefault(key, set()).add(value)

    def same(text, value):
        if isinstance(value, str) or isinstance(value, bool):
            return text == str(value)
        try:
            return float(text) == float(value)
        except ValueError:
            return False

    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "flags.md")).read()
    named = [(k, v) for k, v in re.findall(r"`--(\w+) ([^`|/ ]+)`", page) if k in defaults]
    assert len(named) >= 30
    stale = [(k, v, sorted(map(str, defaults[k]))) for k, v in named if not any(same(v, d) for d in defaults[k])]
    assert not stale, stale
