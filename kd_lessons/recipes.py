"""Recipes: one frozen, validated dataclass per experiment, whose plain-data form names its cache files.

Introduced in notebook 04_distill_mnist. Each run module defines `@dataclass(frozen=True) class XRecipe(Recipe)`
with the current mode's defaults (`field(default_factory=lambda: config.pick(full, quick))`, or `pick(full, quick)`)
and `recipe(**overrides) -> XRecipe`; a recipe that depends on a dataset takes it as its one positional argument
(`recipe("mnist", student_width=30)`; teachers also take `arch`). Fields are read as attributes (`rec.steps`),
changed with `rec.replace(steps=10)` (a validated copy) and printed whole in one line.

Construction checks every field against its annotation (a str where an int is needed, a float for an int, a bool
for a number) and the class's ranges (`_check`), raising ValueError that names the field, the value and what is
allowed, so a typo never starts a training run. An int given for a float field is stored as a float, so `T=4` and
`T=4.0` name the same cache file.

`asdict()` is exactly the dict the course used before recipes were classes, so `key` (`cache.key(asdict())`) and
every cache file name stay the same. The mode rule: a recipe holds `mode` as a field where its dict always did
(few_labels, grid, tour, synthetic_sets); teachers, zoo, trace_students and lm_students put `config.mode()` into the
file name beside the key instead; hinton2015 and compression cache nothing by their recipe. Either way quick and
full results never share a file (moving the mode would rename every learner's cache, so it stays where it is).
"""
from __future__ import annotations

import dataclasses
import types
import typing

from kd_lessons import cache, config

__all__ = ["Recipe", "pick", "check_recipe"]


def pick(full, quick):
    """A field defaulting to `full` (`quick` in quick mode), read when the recipe is made. Notebook 04_distill_mnist."""
    return dataclasses.field(default_factory=lambda: config.pick(full, quick))


def _fits(value, hint) -> bool:
    """True when value has the annotated type (int, float, str, bool, None, unions, tuple[...], list[...], Recipe)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, origin):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    return isinstance(value, origin or hint)


def _name(hint) -> str:
    plain = typing.get_origin(hint) is None and hasattr(hint, "__name__")
    return hint.__name__ if plain else str(hint).replace("typing.", "").replace("NoneType", "None")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The base of every recipe: type checks from the annotations, ranges from `_check`, `asdict`, `key`, `replace`."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            hint, value = hints[f.name], getattr(self, f.name)
            if not _fits(value, hint):
                raise ValueError(f"{type(self).__name__}.{f.name}={value!r} ({type(value).__name__}): "
                                 f"expected {_name(hint)}")
            if hint is float and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))
        self._check()

    def _check(self) -> None:
        """Per-class ranges; subclasses call self._positive(...), self._between(...), self._one_of(...)."""

    def _fail(self, name: str, allowed: str):
        raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r}: {allowed}")

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and not value > 0:
                self._fail(name, "must be > 0")

    def _between(self, name: str, low: float, high: float) -> None:
        if not low <= getattr(self, name) <= high:
            self._fail(name, f"must be in [{low:g}, {high:g}]")

    def _one_of(self, name: str, options) -> None:
        if getattr(self, name) not in options:
            self._fail(name, f"use one of {list(options)}")

    def __getitem__(self, name):
        raise TypeError(f"{type(self).__name__} is a frozen dataclass: read rec.{name}, not rec[{name!r}]; "
                        f"rec.replace({name}=...) for a changed copy, rec.asdict() for a dict")

    def asdict(self) -> dict:
        """The recipe as plain data (nested recipes as dicts): what is saved beside results and hashed into `key`."""
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """The 12-hex-digit cache key of this recipe (the same as cache.key of its dict form)."""
        return cache.key(self.asdict())

    def replace(self, **changes) -> Recipe:
        """A validated copy with some fields changed; an unknown field name raises ValueError listing the fields."""
        return dataclasses.replace(self, **check_recipe(type(self), changes))


def check_recipe(cls: type, overrides: dict) -> dict:
    """overrides, once every name is a field of `cls` (else ValueError naming the unknown ones). Notebook 04."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; use some of {fields}")
    return overrides
