"""Named registries with did-you-mean errors, for everything a user names on the command line."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError", "suggest"]

T = TypeVar("T")


def suggest(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'fog'?"`` when a close match exists, else ``""``."""
    matches = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.6)
    if not matches:
        return ""
    if len(matches) == 1:
        return f"; did you mean {matches[0]!r}?"
    return "; did you mean one of " + ", ".join(repr(m) for m in matches) + "?"


class UnknownNameError(KeyError, ValueError):
    """Raised by :meth:`Registry.get` for an unregistered name. Both a KeyError and a ValueError."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Registry(Generic[T]):
    """A mapping from names to objects (classes, functions, configs), filled with :meth:`register`.

    >>> CORRUPTIONS = Registry("corruption")
    >>> @CORRUPTIONS.register("fog")
    ... def fog(x, severity): ...
    >>> CORRUPTIONS.get("fgo")   # UnknownNameError: unknown corruption 'fgo'; did you mean 'fog'? ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._tags: dict[str, frozenset[str]] = {}

    def register(self, name: str, obj: T | None = None, *, tags: Iterable[str] = ()) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` it is a decorator."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            self._tags[name] = frozenset(tags)
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{suggest(name, self._items)}; valid: {', '.join(self._items)}"
            ) from None

    def names(self, tag: str | None = None) -> list[str]:
        return [n for n in self._items if tag is None or tag in self._tags[n]]

    def tags(self, name: str) -> frozenset[str]:
        self.get(name)
        return self._tags[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"
