"""Runtime glue for a MERBench checkout patched by ``install.py``.

The blocks the installer writes into MERBench's ``toolkit`` call these three functions each time
MERBench builds its maps, so the maps always follow the installed package (a new model or dataset
needs no reinstall; a renamed one no stale entry):

    toolkit/models/__init__.py      MODEL_MAP.update(plugin_models())
    toolkit/data/__init__.py        MODEL_DATASET_MAP.update(plugin_model_datasets(Data_Feat))
    toolkit/dataloader/__init__.py  DATALOADER_MAP.update(plugin_dataloaders())

Datasets: a registered dataset's dataloader (a class, or a ``"module:attr"`` string resolved here,
so MERBench-only imports wait until MERBench runs) follows MERBench's dataloader contract and
exposes the dataset class its models read through a ``dataset_class`` attribute (class or
``"module:attr"``). A model registered with ``dataset='feat'`` reads MERBench's own ``Data_Feat``.
"""
import importlib
from typing import Any, Dict

from . import registry


def resolve(obj: Any) -> Any:
    """A class as is, or ``"package.module:attr"`` (``attr`` may be dotted) imported now."""
    if not isinstance(obj, str):
        return obj
    module, sep, attr = obj.partition(":")
    if not (sep and module and attr):
        raise ValueError(f"{obj!r} is not a 'package.module:attr' reference")
    target = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def _unavailable(kind: str, name: str, exc: Exception) -> type:
    """Stand-in for a class that failed to import: the error waits until someone uses *that* name, so
    one broken optional dataset cannot break every other MERBench model or dataset."""
    message = (f"merbench_plugins {kind} {name!r} is unavailable: {type(exc).__name__}: {exc} "
               f"(install what it names, then rerun)")

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(message)

    Unavailable.__name__ = Unavailable.__qualname__ = f"Unavailable_{name}"
    return Unavailable


def dataloader_class(dataset: str) -> type:
    return resolve(registry.get_dataset_entry(dataset).dataloader)


def dataset_class(dataset: str) -> type:
    """The dataset class (``get_datasets`` side) of a registered dataset, via its dataloader."""
    loader = dataloader_class(dataset)
    cls = getattr(loader, "dataset_class", None)
    if cls is None:
        raise AttributeError(f"dataloader {loader.__module__}.{loader.__name__} of dataset {dataset!r} has no "
                             f"`dataset_class` attribute; set it to the dataset class its models read")
    return resolve(cls)


def plugin_models() -> Dict[str, type]:
    """Every installable model: name -> class, for MERBench's ``MODEL_MAP``."""
    return {name: registry.get_model_entry(name).cls for name in registry.list_models(installable=True)}


def plugin_model_datasets(feat_dataset_class: type) -> Dict[str, type]:
    """Every installable model: name -> the dataset class MERBench's ``get_datasets`` must build."""
    out: Dict[str, type] = {}
    for name in registry.list_models(installable=True):
        kind = registry.get_model_entry(name).dataset
        if kind == "feat":
            out[name] = feat_dataset_class
            continue
        try:
            out[name] = dataset_class(kind)
        except Exception as exc:  # noqa: BLE001  (reported when this model is used, see _unavailable)
            out[name] = _unavailable("dataset class of model", name, exc)
    return out


def plugin_dataloaders() -> Dict[str, type]:
    """Every registered dataset: name -> dataloader class, for MERBench's ``DATALOADER_MAP``."""
    out: Dict[str, type] = {}
    for name in registry.list_datasets():
        try:
            out[name] = dataloader_class(name)
        except Exception as exc:  # noqa: BLE001
            out[name] = _unavailable("dataloader of dataset", name, exc)
    return out
