"""merbench-plugins: missing- and noise-robust multimodal emotion recognition models for MERBench."""
__version__ = "0.1.0"

from .registry import (create_model, get_model_class, get_model_entry, list_datasets, list_models,  # noqa: F401
                       model_defaults, model_grid, register_dataset, register_model)
