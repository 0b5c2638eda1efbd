"""The one list of distillation methods: each registers where it is defined, so every table iterates the same list.

Introduced in notebook 11_methods_tour. A method is a published distillation technique; it registers, next to its
class (or function), its display name, its family, its paper (as cited in docs/references.md), the weights its
paper uses (`defaults`) and `build(teacher, rec, **context)`:

- families "none", "logits", "relations", "contrastive": an `Objective` for `train.distill`, or a function
  student -> Objective when it needs the student's shapes (CRD's heads are fresh per run);
- "features": a function student -> `FeatureKD` (the regressors are sized from both models);
- "scheme": a procedure `train(make_student, x, y, seed, **kw) -> student` (the training around the loss);
- "generative": a `train_lm` plug-in `loss_fn(model, x, y)` (with `batch_fn` where it brings its own data); context
  is `shared` (the transfer corpus, the top-k pool), `seed`, `meter` (a CostMeter), `k`, `renormalize`.

Importing this module imports nothing else; `methods()` and `get()` import the modules that register, in the order
of `MODULES`, so the tables keep one order wherever they are first asked for. Names are unique per task (image
classification, or language models: both have a "scratch").
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import itertools
import types
from collections.abc import Mapping
from typing import Any, Callable

__all__ = ["FAMILIES", "MODULES", "MethodSpec", "register", "unregister", "methods", "get", "setting",
           "markdown_table"]

FAMILIES = ("none", "logits", "relations", "contrastive", "features", "scheme", "generative")
MODULES = ("kd_lessons.objectives", "kd_lessons.methods.logits", "kd_lessons.methods.relations",
           "kd_lessons.methods.contrastive", "kd_lessons.methods.feature_kd", "kd_lessons.methods.schemes",
           "kd_lessons.generative.lm_objectives")
_REGISTRY: dict[tuple[str, str], "MethodSpec"] = {}  # (task, name) -> spec
_COUNTER = itertools.count()


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One registered method: what the tables show and how a run builds it. Notebook 11_methods_tour."""

    name: str
    family: str
    paper: str
    defaults: Mapping[str, Any]
    build: Callable[..., Any]
    module: str = ""
    target: Any = dataclasses.field(default=None, compare=False, repr=False)  # the registered class or function
    number: int = dataclasses.field(default=0, compare=False, repr=False)  # registration order within a module

    @property
    def task(self) -> str:
        """The names' namespace: "text" for the generative family (language-model students), else "images"."""
        return "text" if self.family == "generative" else "images"


def setting(rec, key: str):
    """One value of a recipe, a dict or a frozen dataclass alike. Introduced in notebook 11_methods_tour."""
    if isinstance(rec, Mapping):
        if key in rec:
            return rec[key]
    elif hasattr(rec, key):
        return getattr(rec, key)
    raise ValueError(f"the recipe {rec!r} has no {key!r}; pass the recipe of the run (e.g. tour.recipe()), "
                     f"which sets {key!r}")


def _default_build(target, defaults: Mapping, recipe_keys: Mapping[str, str]) -> Callable[..., Any]:
    """build(teacher, rec, **context): target(**defaults), the recipe's values for recipe_keys, then the teacher
    and the context values (not None) that the target takes by name (e.g. a generative plug-in's meter)."""
    params = inspect.signature(target).parameters
    unknown = [k for k in defaults if k not in params]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"defaults {unknown} are not parameters of {target.__name__}{inspect.signature(target)}")

    def build(teacher, rec, **context):
        kwargs = {**defaults, **{param: setting(rec, key) for param, key in recipe_keys.items()}}
        kwargs.update((k, v) for k, v in {"teacher": teacher, **context}.items() if k in params and v is not None)
        return target(**kwargs)
    return build


def register(name: str, family: str, paper: str, defaults: Mapping | None = None, recipe_keys=(),
             build: Callable[..., Any] | None = None):
    """Decorator: add the class or function below to the registry under `name`. Notebook 11_methods_tour.

    Without `build`, the method is built as `target(**defaults)`, with the recipe's values for `recipe_keys`
    (names, e.g. the tour's ("T", "alpha"), or {parameter: recipe key}) and the teacher and context the target
    takes. A name already registered for the same task raises ValueError.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name={name!r}: pass the method's display name, e.g. 'DKD'")
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: use one of {FAMILIES}")
    if not isinstance(paper, str) or not paper.strip():
        raise ValueError(f"paper={paper!r}: cite the paper as docs/references.md does, e.g. 'Zhao et al. 2022'")
    defaults = dict(defaults or {})
    recipe_keys = dict(recipe_keys) if isinstance(recipe_keys, Mapping) else {k: k for k in recipe_keys}
    missing = [k for k in recipe_keys if k not in defaults]
    if missing:
        raise ValueError(f"recipe_keys {missing} have no paper default; add them to defaults={defaults}")

    def decorate(target):
        spec = MethodSpec(name, family, paper, types.MappingProxyType(defaults),
                          build or _default_build(target, defaults, recipe_keys),
                          getattr(target, "__module__", ""), target, next(_COUNTER))
        key = (spec.task, name)
        if key in _REGISTRY:
            raise ValueError(f"a method named {name!r} is already registered ({_REGISTRY[key].module}); "
                             "pick another name or unregister the old one first")
        _REGISTRY[key] = spec
        return target
    return decorate


def unregister(name: str, family: str | None = None) -> MethodSpec:
    """Remove a method: tests that register a dummy undo it with this (no lesson needs it)."""
    spec = get(name, family)
    del _REGISTRY[(spec.task, spec.name)]
    return spec


def _load() -> None:
    for module in MODULES:
        importlib.import_module(module)


def _order(spec: MethodSpec) -> tuple[int, int]:
    return (MODULES.index(spec.module) if spec.module in MODULES else len(MODULES), spec.number)


def methods(family: str | None = None, families=None) -> list[MethodSpec]:
    """Every registered method (of one family, or of several), in the course's order. Notebook 11_methods_tour."""
    wanted = set(families or ()) | ({family} if family else set())
    unknown = wanted - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; use some of {FAMILIES}")
    _load()
    return [s for s in sorted(_REGISTRY.values(), key=_order) if not wanted or s.family in wanted]


def get(name: str, family: str | None = None) -> MethodSpec:
    """The method registered as `name` (`family` decides between same-named ones). Notebook 11_methods_tour."""
    found = [s for s in methods(family) if s.name == name]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{name!r} is registered in families {[s.family for s in found]}; pass family=")
    raise ValueError(f"no method named {name!r}" + (f" in family {family!r}" if family else "")
                     + f"; registered: {[s.name for s in methods(family)]}")


def markdown_table() -> str:
    """The README's method table (method, family, paper): scripts/method_table.py writes it, a test checks it."""
    rows = ["| method | family | paper |", "| --- | --- | --- |"]
    rows += [f"| {s.name} | {s.family} | {s.paper} |" for s in methods()]
    return "\n".join(rows)
