"""Name -> implementation registries, so YAML strings never drive if/elif chains."""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from nmoe_sim.errors import ConfigError

T = TypeVar("T")


class _Lazy:
    """A registry entry not imported yet: ``"package.module:attr"``."""

    def __init__(self, target: str) -> None:
        self.module, _, self.attr = target.partition(":")

    def load(self) -> object:
        return getattr(importlib.import_module(self.module), self.attr)


class Registry(Generic[T]):
    """A named table of implementations; an unknown name lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attr"``, imported on first ``get`` (keeps heavy imports
        such as torch out of commands that only read the registry's names)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = _Lazy(target)  # type: ignore[assignment]

    def get(self, name: str, key: str | None = None) -> T:
        try:
            item = self._items[name]
        except KeyError:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None
        if isinstance(item, _Lazy):
            item = self._items[name] = item.load()
        return item

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
