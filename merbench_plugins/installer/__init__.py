"""Register merbench-plugins in a MERBench checkout: marked, ast-located, reversible patches.

``python install.py MERBENCH_DIR`` (or ``python -m merbench_plugins install``) runs :func:`cli.main`;
:mod:`.core` plans and applies the changes, :mod:`.patching` does the text surgery, and
:mod:`merbench_plugins.merbench` is what the patched MERBench files import at runtime.
"""
from .core import InstallerError, check, install, plan_install, plan_uninstall, survey, uninstall  # noqa: F401
