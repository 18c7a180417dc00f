"""Imports deferred until first use: a package's names, or a module.

A package that re-exports its public names from many modules would import
them all, and what they import, for a caller that needs one: a quick command
would pay for every other. ``__getattr__ = lazy.exports(__name__, WHERE)``
imports each name's module at the first access instead, and
:func:`module` defers a module that only some paths of its importer use.
Both import with Python's own machinery: safe in a worker's threads.
"""

from __future__ import annotations

import importlib
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


class _Deferred(ModuleType):
    """Stands for a module not imported yet; imports it at its first use.

    Every attribute is read from the real module (so a change made to it,
    e.g. by a test, is seen). Unlike importlib's ``LazyLoader``, it is safe
    in threads: the import is Python's own, under its per-module lock.
    """

    def __getattr__(self, attribute: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, attribute)


def module(name: str) -> ModuleType:
    """Module ``name``, imported at the first access to one of its attributes.

    For a module that only some paths of its importer use: the others do not
    pay for it and what it imports.
    """
    found = sys.modules.get(name)
    return found if found is not None else _Deferred(name)
