"""Imports deferred until first use: a package's names, or a module.

A package that re-exports its public names from many modules would import
them all, and what they import, for a caller that needs one: a quick command
would pay for every other. ``__getattr__ = lazy.exports(__name__, WHERE)``
imports each name's module at the first access instead, and
:func:`module` defers a module that only some paths of its importer use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Callable


def exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds each name of ``where`` in its module.

    ``where`` maps a name to the module that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__


def module(name: str) -> ModuleType:
    """Module ``name``, run at the first access to one of its attributes.

    For a module that only some paths of its importer use: the others do not
    pay for it and what it imports.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    found = importlib.util.module_from_spec(spec)
    sys.modules[name] = found
    loader.exec_module(found)
    return found
