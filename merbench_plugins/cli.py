"""Helpers every command line shares: one-line refusals, and a quiet end when stdout is closed early."""
import os
import sys


def refuse(exc, code: int = 2) -> int:
    """Print a refused input or setting as the one line ``error: ...`` on stderr; returns the exit code."""
    print(f"error: {exc}", file=sys.stderr)
    return code


def run_cli(main, *args) -> int:
    """``sys.exit(run_cli(main))`` for our command lines: ``cmd | head`` closing stdout early ends the command
    quietly (exit 1, as Python's documentation advises) instead of with a BrokenPipeError traceback."""
    try:
        return main(*args)
    except BrokenPipeError:
        # the interpreter flushes stdout once more at exit: point it at devnull so that flush cannot fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
