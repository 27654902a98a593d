"""`python -m merbench_plugins yaml`: print, write or check model-tune.yaml against the registry."""
import argparse
import sys

from .. import registry


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins yaml",
                                description="Tuning grids of every registered model in MERBench's model-tune.yaml format.")
    p.add_argument("--write", metavar="FILE", help="write the YAML to FILE")
    p.add_argument("--check", metavar="FILE", help="exit 1 if FILE differs from the registry")
    a = p.parse_args(argv)
    text = registry.render_tune_yaml()
    if a.check:
        with open(a.check) as f:
            if f.read() != text:
                print(f"{a.check} is out of date with the registry; regenerate it with "
                      f"`python -m merbench_plugins yaml --write {a.check}`", file=sys.stderr)
                return 1
        print(f"{a.check} matches the registry")
        return 0
    if a.write:
        from ..fileio import atomic_write_text
        atomic_write_text(a.write, text)
        print(f"wrote {a.write}")
        return 0
    sys.stdout.write(text)
    return 0
