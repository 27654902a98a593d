"""model-tune.yaml agrees with the registry, in MERBench's format, and the flags have both forms."""
import argparse
from pathlib import Path

from merbench_plugins import yamlio

from merbench_plugins import list_models, model_grid, registry
from merbench_plugins.config import AttentionRobustV2Config
from merbench_plugins.commands import tune_yaml

REPO_YAML = Path(__file__).resolve().parents[1] / "model-tune.yaml"


def test_yaml_file_is_generated_from_registry():
    assert REPO_YAML.read_text() == registry.render_tune_yaml(), \
        "regenerate with `python -m merbench_plugins yaml --write model-tune.yaml`"
    assert tune_yaml.main(["--check", str(REPO_YAML)]) == 0


def test_every_value_is_a_list_and_types_survive_yaml():
    data = yamlio.safe_load(REPO_YAML.read_text())
    assert set(data) == set(list_models())
    for model, grid in data.items():
        assert grid == model_grid(model)
        for key, values in grid.items():
            assert isinstance(values, list) and values, (model, key)
            default = registry.get_model_entry(model).config.defaults()[key]
            assert all(type(v) is type(default) or (isinstance(default, float) and isinstance(v, int))
                       for v in values), (model, key, values)


def test_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "model-tune.yaml"
    stale.write_text(registry.render_tune_yaml().replace("[0.005, 0.01, 0.02]", "[0.01]", 1))
    assert tune_yaml.main(["--check", str(stale)]) == 1


def test_boolean_flags_have_both_forms_and_none_default():
    p = AttentionRobustV2Config.add_arguments(argparse.ArgumentParser())
    assert p.parse_args([]).use_proxy_attention is None
    assert p.parse_args(["--use_proxy_attention"]).use_proxy_attention is True
    assert p.parse_args(["--no_proxy_attention"]).use_proxy_attention is False
    assert p.parse_args(["--no_vae"]).use_vae is False
    assert p.parse_args(["--kl_weight=0.02"]).kl_weight == 0.02
    cfg = AttentionRobustV2Config.from_args(p.parse_args(["--no_modality_dropout"]))
    assert cfg.use_modality_dropout is False and cfg.kl_weight == 0.01


def test_from_args_coerces_yaml_strings():
    cfg = AttentionRobustV2Config.from_args({"use_vae": "false", "hidden_dim": 64.0, "kl_weight": 1})
    assert cfg.use_vae is False and cfg.hidden_dim == 64 and isinstance(cfg.kl_weight, float)
