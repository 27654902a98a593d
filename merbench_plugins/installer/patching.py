"""Text surgery on files we do not own: marked blocks located with ``ast``, removed byte for byte.

A block is a run of whole lines from ``# >>> merbench_plugins >>>`` to ``# <<< merbench_plugins <<<``
(conda-init style). Inserting then removing a block gives back the exact original text, including
its line endings (``\\n`` or ``\\r\\n``, taken from the file) and a missing newline at the end of the
file: a block appended to such a file has no newline after its end marker, and that is how removal
knows the newline before the block was ours.
"""
import ast
import os
import stat
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..fileio import temp_beside

BEGIN = "# >>> merbench_plugins >>>"
END = "# <<< merbench_plugins <<<"


class PatchError(Exception):
    """A file cannot be patched as it is; the message says which, why and what to do."""


# --------------------------------------------------------------------------------------------- lines

def split_lines(text: str) -> List[str]:
    """Lines with their endings. Only ``\\n`` ends a line (``str.splitlines`` would also split on form
    feeds and U+2028, which Python's tokenizer does not, and the ``ast`` line numbers would drift)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _strip_eol(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith("\n") else line


def find_blocks(text: str, where: str = "file") -> List[Tuple[int, int]]:
    """(first, last) line indices (0-based, inclusive) of every marked block; unbalanced markers raise."""
    blocks, start = [], None
    for i, line in enumerate(split_lines(text)):
        s = line.strip()
        if s.startswith(BEGIN):
            if start is not None:
                raise PatchError(f"{where}: line {i + 1} opens a merbench_plugins block inside the one opened at "
                                 f"line {start + 1}; delete the damaged block by hand or restore the file from "
                                 f"its backup, then rerun")
            start = i
        elif s.startswith(END):
            if start is None:
                raise PatchError(f"{where}: line {i + 1} closes a merbench_plugins block that was never opened; "
                                 f"delete that line by hand, then rerun")
            blocks.append((start, i))
            start = None
    if start is not None:
        raise PatchError(f"{where}: the merbench_plugins block opened at line {start + 1} is never closed; "
                         f"delete it by hand or restore the file from its backup, then rerun")
    return blocks


def strip_blocks(text: str, where: str = "file") -> str:
    """The text without our blocks: exactly the file as it was before they were inserted."""
    blocks = find_blocks(text, where)
    if not blocks:
        return text
    lines = split_lines(text)
    for first, last in reversed(blocks):
        at_eof_without_newline = last == len(lines) - 1 and not lines[last].endswith("\n")
        del lines[first:last + 1]
        if at_eof_without_newline and first > 0:
            lines[first - 1] = _strip_eol(lines[first - 1])  # that newline came with the block
    return "".join(lines)


def insert_block(text: str, after_line: int, block: Sequence[str]) -> str:
    """Insert ``block`` (lines without endings) after 1-based line ``after_line`` (0 = at the top)."""
    lines = split_lines(text)
    nl = newline_of(text)
    new = [line + nl for line in block]
    if after_line >= len(lines) and lines and not lines[-1].endswith("\n"):
        # the file had no final newline: give its last line one and keep the file's end newline-less
        lines[-1] += nl
        new[-1] = new[-1][:-len(nl)]
    lines[after_line:after_line] = new
    return "".join(lines)


# ---------------------------------------------------------------------------------------------- ast

def parse_python(text: str, where: str) -> ast.Module:
    try:
        return ast.parse(text.lstrip("\ufeff"), filename=where)
    except SyntaxError as exc:
        raise PatchError(f"{where} does not parse (line {exc.lineno}: {exc.msg}); fix it or restore it from "
                         f"git, then rerun") from None


def find_dict_assignment(tree: ast.Module, name: str) -> Optional[ast.Assign]:
    """The first ``NAME = {...}`` (a dict literal), anywhere, e.g. inside ``get_models.__init__``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)):
            return node
    return None


def _str_const(node) -> Optional[str]:
    if isinstance(node, getattr(ast, "Index", ())):  # Python 3.8 wraps subscripts in ast.Index
        node = node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def map_keys(tree: ast.Module, name: str) -> Dict[str, int]:
    """String keys the map gets anywhere in the module -> line: the literal's keys plus any
    ``NAME['key'] = ...`` a fork added later."""
    keys: Dict[str, int] = {}
    assign = find_dict_assignment(tree, name)
    if assign is not None:
        for key in assign.value.keys:
            k = _str_const(key) if key is not None else None
            if k is not None:
                keys.setdefault(k, key.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name:
                    k = _str_const(t.slice)
                    if k is not None:
                        keys.setdefault(k, node.lineno)
    return keys


def module_binds(tree: ast.Module, name: str) -> bool:
    """Whether ``name`` is bound at module level (import, class, def or assignment)."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return True
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def insert_after_dict(text: str, map_name: str, body: Sequence[str], where: str) -> str:
    """Insert ``[BEGIN, *body, END]`` right after the ``map_name = {...}`` literal, at its indentation,
    and prove the result still parses with the block's statements right after the literal."""
    tree = parse_python(text, where)
    assign = find_dict_assignment(tree, map_name)
    if assign is None:
        raise PatchError(f"{where} has no `{map_name} = {{...}}` dict literal; is this a MERBench checkout?")
    line = split_lines(text)[assign.lineno - 1]
    indent = line[:len(line) - len(line.lstrip(" \t"))]
    new = insert_block(text, assign.end_lineno, [indent + s if s else s for s in (BEGIN, *body, END)])
    _verify_follows(parse_python(new, where + " (patched)"), assign.lineno, map_name, len(body), where)
    return new


def _verify_follows(tree: ast.Module, lineno: int, map_name: str, n_lines: int, where: str):
    """The statement after the literal must be our block's first statement, in the same body."""
    for parent in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(parent, field, None)
            if not isinstance(stmts, list):
                continue
            for i, stmt in enumerate(stmts):
                if (isinstance(stmt, ast.Assign) and stmt.lineno == lineno
                        and isinstance(stmt.value, ast.Dict)):
                    follower = stmts[i + 1] if i + 1 < len(stmts) else None
                    block_end = stmt.end_lineno + n_lines + 2  # BEGIN, body, END
                    if follower is not None and stmt.end_lineno < follower.lineno < block_end:
                        return
                    raise PatchError(f"{where}: the inserted lines do not follow `{map_name} = {{...}}` in the "
                                     f"same block (one-line `if`/`;` statement?); patch it by hand")
    raise PatchError(f"{where}: `{map_name}` literal vanished after patching; please report this")


# ---------------------------------------------------------------------------------------------- yaml

def yaml_top_level_keys(text: str) -> Dict[str, int]:
    """Top-level mapping keys -> line, by a line scan (works without PyYAML, keeps line numbers)."""
    keys: Dict[str, int] = {}
    for i, line in enumerate(split_lines(text)):
        s = _strip_eol(line)
        if not s or s[0] in " \t#-{[" or ":" not in s:
            continue
        key = s.split(":", 1)[0].strip().strip("'\"")
        if key:
            keys.setdefault(key, i + 1)
    return keys


def yaml_sections(text: str) -> Dict[str, List[str]]:
    """Top-level key -> its lines (without endings), trailing blank and comment lines dropped."""
    sections: Dict[str, List[str]] = {}
    current: Optional[List[str]] = None
    for line in split_lines(text):
        s = _strip_eol(line)
        if s and s[0] not in " \t#" and ":" in s:
            current = sections.setdefault(s.split(":", 1)[0].strip().strip("'\""), [])
            current.append(s)
        elif current is not None:
            current.append(s)
    for lines in sections.values():
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
            lines.pop()
    return sections


def load_yaml(text: str, where: str):
    """Parse with PyYAML when it is there (MERBench needs it anyway); None when it is not."""
    try:
        from .. import yamlio
    except ImportError:
        return None
    try:
        return yamlio.safe_load(text)
    except yamlio.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise PatchError(f"{where} does not parse as YAML ({' '.join(first[:3])}); fix it or restore it "
                         f"from git, then rerun") from None


# ------------------------------------------------------------------------------------------- writing

def is_writable(path: Path) -> bool:
    """Writable by us *and* not marked read-only: root ignores permission bits, but a user who made a
    file read-only does not want it rewritten, so no write bit at all counts as read-only too."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return os.access(str(path), os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def atomic_write(path: Path, data: bytes, mode: Optional[int] = None) -> None:
    """Write via a temp file in the same folder + ``os.replace``: readers see the old or the new file,
    never half of one. The file keeps its permission bits (``mode`` for a new file, default 0o644)."""
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = temp_beside(str(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, str(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
