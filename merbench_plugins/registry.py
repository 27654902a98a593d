"""The single source of truth: model names -> classes, dataset kinds, hyperparameter configs, grids.

The installer, ``main-robust.py``, the standalone runner, ``model-tune.yaml`` and the tests all
read this. Registration is a side effect of importing :mod:`merbench_plugins.models`; a dataset's
dataloader may be registered as a ``"module:attr"`` string, imported only when MERBench asks for it.
"""
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Type

from .config import BaseConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    config: Type[BaseConfig]
    dataset: str = "feat"        # dataset class kind: 'feat' -> MERBench's Data_Feat; else a registered dataset
    install: bool = True         # False: standalone only (our reference `attention` baseline)
    feat_types: tuple = ("utt", "frm_align", "frm_unalign")
    description: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    dataloader: Any              # class, or "module:attr" string resolved lazily (MERBench-only imports)
    description: str = ""


_MODELS: Dict[str, ModelEntry] = {}
_DATASETS: Dict[str, DatasetEntry] = {}


def register_model(name: str, *, config: Type[BaseConfig], dataset: str = "feat", install: bool = True,
                   feat_types=("utt", "frm_align", "frm_unalign"), force: bool = False) -> Callable:
    """Class decorator: ``@register_model('attention_robust_v2', config=AttentionRobustV2Config)``."""
    def wrap(cls):
        if name in _MODELS and not force and _MODELS[name].cls is not cls:
            raise KeyError(f"model {name!r} is already registered by {_MODELS[name].cls.__module__}."
                           f"{_MODELS[name].cls.__name__}; pick another name or pass force=True")
        doc = (cls.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelEntry(name=name, cls=cls, config=config, dataset=dataset, install=install,
                                   feat_types=tuple(feat_types), description=doc[0] if doc else "")
        return cls
    return wrap


def register_dataset(name: str, dataloader, *, description: str = "", force: bool = False) -> None:
    if name in _DATASETS and not force and _DATASETS[name].dataloader != dataloader:
        raise KeyError(f"dataset {name!r} is already registered; pick another name or pass force=True")
    _DATASETS[name] = DatasetEntry(name=name, dataloader=dataloader, description=description)


def _ensure_loaded():
    from . import models  # noqa: F401  (registers every model)


def list_models(installable: Optional[bool] = None) -> List[str]:
    _ensure_loaded()
    return sorted(n for n, e in _MODELS.items() if installable is None or e.install == installable)


def list_datasets() -> List[str]:
    _ensure_loaded()
    return sorted(_DATASETS)


def get_model_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}") from None


def get_dataset_entry(name: str) -> DatasetEntry:
    _ensure_loaded()
    try:
        return _DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered datasets: {', '.join(sorted(_DATASETS)) or 'none'}") from None


def get_model_class(name: str) -> type:
    return get_model_entry(name).cls


def model_defaults(name: str) -> Dict[str, Any]:
    return get_model_entry(name).config.defaults()


def model_grid(name: str) -> Dict[str, List[Any]]:
    return get_model_entry(name).config.grid()


def all_configs():
    """Every config class in registry order, deduplicated (for argparse: one flag per name)."""
    _ensure_loaded()
    seen, out = set(), []
    for entry in _MODELS.values():
        if entry.config not in seen:
            seen.add(entry.config)
            out.append(entry.config)
    return out


def create_model(name: str, args=None, **overrides):
    """Instantiate a registered model from an argparse namespace (MERBench style) or keyword arguments."""
    import argparse
    cls = get_model_class(name)
    ns = vars(args).copy() if isinstance(args, argparse.Namespace) else dict(args or {})
    ns.update(overrides)
    ns["model"] = name
    return cls(argparse.Namespace(**ns))


def repo_yaml_path() -> str:
    """The checkout's top-level model-tune.yaml (present for source/editable installs)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model-tune.yaml")


def render_tune_yaml(names: Optional[List[str]] = None) -> str:
    """MERBench model-tune.yaml text for our models: one mapping per model, every value a list."""
    names = names if names is not None else list_models()
    lines = ["# Tuning grids of the merbench-plugins models, in MERBench's format: every value is a list;",
             "# MERBench's tuner picks one at random (--hyper_path fixes them). Generated from",
             "# merbench_plugins/config.py by `python -m merbench_plugins yaml`; a test keeps them in sync.", ""]
    for name in names:
        lines.append(f"{name}:")
        for key, values in model_grid(name).items():
            lines.append(f"  {key}: [{', '.join(_yaml_scalar(v) for v in values)}]")
        lines.append("")
    return "\n".join(lines)


def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        # PyYAML (YAML 1.1) reads "1e-05" as a string: the mantissa needs a dot.
        mantissa, _, exponent = repr(v).partition("e")
        if "." not in mantissa and mantissa.lstrip("-").isdigit():
            mantissa += ".0"
        return mantissa + ("e" + exponent if exponent else "")
    return str(v)
