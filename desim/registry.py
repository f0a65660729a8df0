"""Name → class registries for allocators and workload elements.

A design or workload element registers itself under the name YAML uses, with a pydantic model
of its parameters; the packages import their modules automatically, so adding one touches no
other file.

Loading is thread-safe: a Dask worker runs several runs at once in threads of one process, and
its first two runs may both ask a fresh registry for a name. The registry counts as loaded only
once every module has been imported, and the others wait for that instead of reading a
half-filled table.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, type[T]] = {}
        self._loaded = False
        # Re-entrant: a module being imported may itself look a name up (phases does, when it
        # validates), in the importing thread.
        self._lock = threading.RLock()

    def register(self, name: str):
        def deco(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name  # type: ignore[attr-defined]  # each registered kind declares name
            self._items[name] = cls
            return cls

        return deco

    def _load(self) -> None:
        # register() takes no lock: it runs inside imports, which hold their own module locks,
        # and a second lock there could deadlock against a thread importing the same modules.
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            pkg = importlib.import_module(self.package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{mod.name}")
            self._loaded = True  # only now: a failed import leaves the next caller to retry

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name!r} (allowed: {', '.join(self.names())})"
            ) from None

    def items(self) -> list[tuple[str, type[T]]]:
        self._load()
        return sorted(self._items.items())
