"""YAML read the way MERBench reads it (OmegaConf): ``1e-3``, ``5e-4``, ``1E-5``, ``.5e-3`` and ``+1e-3``
are floats, not the strings YAML 1.1's ``yaml.safe_load`` gives. One loader for every hyperparameter
file: tuning grids, ``--hyper_path`` files, the package's own model-tune.yaml."""
import re

import yaml

YAMLError = yaml.YAMLError

# YAML 1.2 floats (a superset of OmegaConf's resolver): exponent sign and fraction dot optional
FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                      |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                      |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                      |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                      |[-+]?\.(?:inf|Inf|INF)
                      |\.(?:nan|NaN|NAN))$""", re.X)


class FloatLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose float resolver also takes exponents without a dot or sign."""


# ints resolve first (their resolver is earlier in the list), so only non-integers reach this one
FloatLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


def safe_load(stream):
    """``yaml.safe_load`` with MERBench's (OmegaConf's) floats; ``stream`` is text or a file."""
    return yaml.load(stream, Loader=FloatLoader)
