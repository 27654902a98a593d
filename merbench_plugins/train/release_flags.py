"""The flags of a toolkit's own ``main-release.py``, read with ``ast`` when main-robust.py starts.

MERTools has several toolkits of one layout (``MERBench/``, ``MER2024/``, ``MER2025/MER2025_Track1/``,
``MER2026/MER2026_Track1/``) whose dataloaders read flags that only their own ``main-release.py``
defines (``--train_snr``, ``--test_snr``, ``--fusion_topn``, ``--fusion_modality``). Reading that file
at run time (never importing it: it imports CUDA-only and optional packages) makes main-robust.py
accept the flags of whichever toolkit it runs in, a future one included. Flags main-robust.py
defines itself win; the others are added with their own defaults, types and help.
"""
import argparse
import ast
import builtins
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

RELEASE_SCRIPT = "main-release.py"
# add_argument keywords taken over as literals (``type`` is resolved by name, see ToolkitType)
LITERAL_KEYWORDS = ("action", "default", "help", "choices", "nargs", "metavar", "const", "dest")
BUILTIN_TYPES = ("int", "float", "str", "bool", "complex")


@dataclass(frozen=True)
class ReleaseFlag:
    """One ``parser.add_argument(...)`` of main-release.py: option strings, literal keywords, type name."""
    options: Tuple[str, ...]
    kwargs: Dict[str, object] = field(default_factory=dict)
    type_name: Optional[str] = None
    line: int = 0

    @property
    def dest(self) -> str:
        if self.kwargs.get("dest"):
            return str(self.kwargs["dest"])
        long = [o for o in self.options if o.startswith("--")] or list(self.options)
        return long[0].lstrip("-").replace("-", "_")


class ToolkitType:
    """An argparse ``type`` that main-release.py names (``func_none_or_str``), imported from the modules
    main-release.py imports it from, only when a value is given (the import pulls in the toolkit)."""

    def __init__(self, name: str, modules: List[str]):
        self.name, self.modules, self._func = name, modules, None
        self.__name__ = name       # argparse names the type in its error messages

    def resolve(self):
        if self._func is None:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            for module in self.modules:
                try:
                    self._func = getattr(importlib.import_module(module), self.name, None)
                except Exception:  # noqa: BLE001  (a toolkit module that cannot import here: try the next)
                    continue
                if self._func is not None:
                    break
            if self._func is None:
                print(f"note: {RELEASE_SCRIPT}'s type {self.name} could not be imported from "
                      f"{', '.join(self.modules) or 'its imports'}; the value is kept as text", file=sys.stderr)
                self._func = str
        return self._func

    def __call__(self, value):
        return self.resolve()(value)


def _imported_from(tree: ast.Module) -> Dict[str, List[str]]:
    """name -> modules that may bind it: ``from m import name`` first, then every ``from m import *``."""
    named: Dict[str, List[str]] = {}
    star: List[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name == "*":
                    star.append(node.module)
                else:
                    named.setdefault(alias.asname or alias.name, []).append(node.module)
    return {**{k: v + star for k, v in named.items()}, "*": star}


def read_release_flags(path: str) -> List[ReleaseFlag]:
    """Every optional flag main-release.py adds (``*.add_argument('--x', ...)``), in file order."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    sources = _imported_from(tree)
    flags = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
            continue
        options = tuple(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
        if not options or not all(o.startswith("-") for o in options):
            continue        # positionals: main-robust.py takes none
        kwargs, type_name = {}, None
        for kw in node.keywords:
            if kw.arg == "type":
                type_name = ast.unparse(kw.value) if hasattr(ast, "unparse") else getattr(kw.value, "id", None)
            elif kw.arg in LITERAL_KEYWORDS:
                try:
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:      # a computed default (os.cpu_count()): left to argparse's None
                    continue
        if type_name in BUILTIN_TYPES:
            kwargs["type"] = getattr(builtins, type_name)
        elif type_name:
            kwargs["type"] = ToolkitType(type_name.split(".")[-1], sources.get(type_name, sources["*"]))
        flags.append(ReleaseFlag(options, kwargs, type_name, node.lineno))
    return sorted(flags, key=lambda f: f.line)


def add_release_flags(parser: argparse.ArgumentParser, path: str = RELEASE_SCRIPT) -> List[str]:
    """Add the flags of ``path`` that ``parser`` lacks (by option string and by destination); returns their
    option strings. Nothing happens where the file is absent; a file that does not parse is named in a note."""
    if not os.path.isfile(path):
        return []
    try:
        flags = read_release_flags(path)
    except (SyntaxError, UnicodeDecodeError, OSError) as exc:
        print(f"note: could not read the flags of {path} ({exc}); main-robust.py runs with its own", file=sys.stderr)
        return []
    ours = set(parser._option_string_actions)
    dests = {a.dest for a in parser._actions}
    group, added = None, []
    for flag in flags:
        if ours.intersection(flag.options) or flag.dest in dests:
            continue
        group = group or parser.add_argument_group(f"flags of this toolkit's {os.path.basename(path)} (read from it)")
        try:
            group.add_argument(*flag.options, **flag.kwargs)
        except (TypeError, ValueError, argparse.ArgumentError) as exc:
            print(f"note: {path}:{flag.line}: {flag.options[0]} not taken over ({exc})", file=sys.stderr)
            continue
        dests.add(flag.dest)
        ours.update(flag.options)
        added.extend(flag.options)
    return added
