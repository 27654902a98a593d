"""`python -m merbench_plugins models`: registered models with their flags, defaults and grids."""
import argparse

from .. import registry
from ..config import BaseConfig


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins models", description=__doc__.split(": ", 1)[1])
    p.add_argument("name", nargs="?", help="show one model's flags")
    a = p.parse_args(argv)
    names = [a.name] if a.name else registry.list_models()
    for name in names:
        e = registry.get_model_entry(name)
        where = "MERBench + standalone" if e.install else "standalone only"
        print(f"{name:<22} {e.cls.__name__:<20} dataset={e.dataset:<8} {where}  {e.description}")
        if a.name:
            base = {f.name for f in BaseConfig.fields()}
            for f in e.config.fields():
                grid = f.metadata.get("grid")
                print(f"    --{f.name:<26} default {f.default!r:<12} grid {grid}  {'' if f.name in base else f.metadata['help']}")
    return 0
