"""Frozen, typed configs with presets and ``--set a.b=value`` overrides.

A method's config is a tree of frozen keyword-only dataclasses that subclass :class:`Config`::

    @dataclass(frozen=True, kw_only=True)
    class ModelConfig(Config):
        m: int = 16                              # number of codes
        def __post_init__(self):
            require_positive(self, "m")

    @dataclass(frozen=True, kw_only=True)
    class PolyConfig(Config):
        model: ModelConfig = field(default_factory=ModelConfig)

    PRESETS = Presets({"tiny": lambda: PolyConfig(...), "quick": ..., "paper": ...})
    cfg = PRESETS.build("quick", overrides=["model.m=64"])

Overrides are parsed against the field's annotated type (int, float, bool, str, Literal, tuple, Optional), so
``model.m=abc`` fails with a message naming the key, the expected type and what was given, and an unknown key
gets a did-you-mean suggestion. Validation lives in each section's ``__post_init__`` and raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from essence.core.registry import suggest

__all__ = [
    "Config",
    "Presets",
    "parse_override",
    "require",
    "require_positive",
    "require_nonnegative",
    "require_range",
    "require_choice",
]

C = TypeVar("C", bound="Config")


# ----------------------------------------------------------------------------------------------------------
# validation helpers (used in __post_init__)
# ----------------------------------------------------------------------------------------------------------
def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def _where(obj: Any, name: str) -> str:
    """``ModelConfig`` + ``m`` -> ``model.m`` (the key a user would pass to --set)."""
    section = type(obj).__name__.removesuffix("Config")
    section = re.sub(r"(?<!^)(?=[A-Z])", "_", section).lower()
    return f"{section}.{name}" if section else name


def require_positive(obj: Any, *names: str) -> None:
    """Each named field must be > 0 (ints must also be integers)."""
    for name in names:
        value = getattr(obj, name)
        kind = "integer" if isinstance(value, int) and not isinstance(value, bool) else "number"
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
            f"{_where(obj, name)} must be a positive {kind}, got {value!r}",
        )


def require_nonnegative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
            f"{_where(obj, name)} must be >= 0, got {value!r}",
        )


def require_range(obj: Any, name: str, low: float, high: float, *, inclusive: bool = True) -> None:
    value = getattr(obj, name)
    ok = low <= value <= high if inclusive else low < value < high
    brackets = ("[", "]") if inclusive else ("(", ")")
    require(ok, f"{_where(obj, name)} must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value!r}")


def require_choice(obj: Any, name: str, choices: Iterable[Any]) -> None:
    value = getattr(obj, name)
    choices = tuple(choices)
    require(value in choices, f"{_where(obj, name)} must be one of {list(choices)}, got {value!r}")


# ----------------------------------------------------------------------------------------------------------
# parsing override values against type annotations
# ----------------------------------------------------------------------------------------------------------
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_override(raw: str, tp: Any, key: str) -> Any:
    """Convert the string ``raw`` to annotated type ``tp`` or raise ValueError naming ``key``."""
    origin = get_origin(tp)

    def fail(extra: str = "") -> ValueError:
        return ValueError(f"{key} expects {_type_name(tp)}, got {raw!r}{extra}")

    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and raw.strip().lower() in {"none", "null", ""}:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_override(raw, arg, key)
            except ValueError:
                continue
        raise fail()
    if origin is Literal:
        for choice in get_args(tp):
            if str(choice) == raw:
                return choice
        hint = suggest(raw, [str(c) for c in get_args(tp)])
        raise fail(f"{hint}")
    if origin in (tuple, list):
        args = get_args(tp)
        text = raw.strip()
        if text.startswith(("[", "(")):
            text = text[1:-1]
        items = [t.strip() for t in text.split(",") if t.strip()]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(items):
                raise fail(f" ({len(args)} comma-separated values expected)")
            values = [parse_override(v, a, key) for v, a in zip(items, args)]
        else:
            inner = args[0] if args else str
            values = [parse_override(v, inner, key) for v in items]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise fail(" (use true/false)")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            try:
                f = float(raw)
            except ValueError:
                raise fail() from None
            if f.is_integer():
                return int(f)
            raise fail() from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise fail() from None
    if tp is str:
        return raw
    if tp is Any:
        return raw
    raise ValueError(f"{key}: overriding fields of type {_type_name(tp)} from the command line is not supported")


# ----------------------------------------------------------------------------------------------------------
# the Config base class
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base class for config sections: (de)serialisation and overrides. Subclasses are frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise with a suggestion."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"unknown config key {cls.__name__}.{key}{suggest(key, sorted(names))}")
            tp = hints[key]
            if isinstance(tp, type) and issubclass(tp, Config) and isinstance(value, Mapping):
                value = tp.from_dict(value)
            elif get_origin(tp) is tuple and isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            kwargs[key] = value
        return cls(**kwargs)

    def keys(self, prefix: str = "") -> list[str]:
        """All dotted leaf keys, e.g. ``['model.m', 'optim.lr', ...]``."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            key = f"{prefix}{f.name}"
            out.extend(value.keys(key + ".") if isinstance(value, Config) else [key])
        return out

    def get(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def with_overrides(self: C, overrides: Iterable[str] | Mapping[str, Any]) -> C:
        """Apply ``["a.b=value", ...]`` (strings, parsed by type) or ``{"a.b": value}`` (typed values)."""
        items: list[tuple[str, Any, bool]] = []
        if isinstance(overrides, Mapping):
            items = [(k, v, False) for k, v in overrides.items()]
        else:
            for text in overrides:
                if "=" not in text:
                    raise ValueError(f"override {text!r} must look like key=value, e.g. optim.lr=0.1")
                key, raw = text.split("=", 1)
                items.append((key.strip(), raw.strip(), True))
        cfg = self
        for key, value, from_text in items:
            cfg = cfg._set(key, value, from_text)
        return cfg

    def _set(self: C, dotted: str, value: Any, from_text: bool, full_key: str | None = None) -> C:
        full_key = full_key or dotted
        head, _, rest = dotted.partition(".")
        names = [f.name for f in dataclasses.fields(self)]
        if head not in names:
            raise ValueError(f"unknown config key {full_key!r}{suggest(full_key, self._root_keys(full_key, dotted))}")
        current = getattr(self, head)
        if rest:
            if not isinstance(current, Config):
                raise ValueError(f"unknown config key {full_key!r}: {head} has no sub-keys")
            return dataclasses.replace(self, **{head: current._set(rest, value, from_text, full_key)})
        if isinstance(current, Config):
            raise ValueError(f"{full_key!r} is a section; set one of its keys, e.g. {full_key}.{current.keys()[0]}")
        tp = typing.get_type_hints(type(self))[head]
        if from_text:
            value = parse_override(value, tp, full_key)
        return dataclasses.replace(self, **{head: value})

    def _root_keys(self, full_key: str, dotted: str) -> list[str]:
        prefix = full_key[: len(full_key) - len(dotted)]
        return [prefix + k for k in self.keys()]


# ----------------------------------------------------------------------------------------------------------
# presets
# ----------------------------------------------------------------------------------------------------------
class Presets(typing.Generic[C]):
    """The ``tiny`` / ``quick`` / ``paper`` presets of one method (each a zero-argument factory)."""

    REQUIRED = ("tiny", "quick", "paper")

    def __init__(self, factories: Mapping[str, Callable[[], C]]):
        missing = [name for name in self.REQUIRED if name not in factories]
        if missing:
            raise ValueError(f"presets {missing} are missing; every method defines {list(self.REQUIRED)}")
        self._factories = dict(factories)

    def names(self) -> list[str]:
        return list(self._factories)

    def build(self, name: str = "quick", overrides: Iterable[str] | Mapping[str, Any] = ()) -> C:
        if name not in self._factories:
            raise ValueError(f"unknown preset {name!r}{suggest(name, self.names())}; choose from {self.names()}")
        return self._factories[name]().with_overrides(overrides)
