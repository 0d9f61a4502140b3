"""Module attributes imported on first use (PEP 562), so that importing a package does not
import TensorFlow before a name that needs it is used."""

from __future__ import annotations

import importlib


def lazy_getattr(package: str, module_of: dict[str, str], namespace: dict):
    """A module ``__getattr__`` for ``package``: each name in ``module_of`` (name -> module)
    is imported from its module on first use and then kept in ``namespace`` (the package's
    ``globals()``), so the next look-up is a plain attribute."""

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module '{package}' has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(module_of[name]), name)
        return value

    return __getattr__
