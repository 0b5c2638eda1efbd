"""Recipes (kd_lessons.recipes): cache keys identical to the dict recipes they replaced, and validation by field.

The expected keys were computed from the dict recipes of commit 0699338 (before recipes were dataclasses), in quick
and full mode: a moved key would silently orphan every learner's cached teachers, grids and sweeps.
"""
import dataclasses

import pytest

from kd_lessons import cache, teachers
from kd_lessons.generative import zoo
from kd_lessons.recipes import Recipe
from kd_lessons.runs import compression, few_labels, grid, hinton2015, lm_students, synthetic_sets, tour, trace_students

KEYS = {
    "quick": {
        "teacher:mnist:ensemble": "ce99a05726ba",
        "teacher:mnist:cnn": "155fa489b266",
        "teacher:mnist:mlp": "345fd6df2fac",
        "teacher:fashion_mnist:ensemble": "3abc8af4df72",
        "teacher:fashion_mnist:cnn": "ccc42aba44be",
        "teacher:fashion_mnist:mlp": "0d7f477b19f1",
        "teacher:cifar10:resnet": "39d138a1add8",
        "teacher:mnist:default": "ce99a05726ba",
        "text:shakespeare": "2b91fbb6d37b",
        "synthetic_sets": "74dedc2764a1",
        "compression": "2440d6db0cb3",
        "tour": "511fce209ca1",
        "hinton2015": "24d98b9c12b0",
        "few_labels:mnist": "ae96d1a65c6f",
        "grid:mnist": "376e34221b3b",
        "few_labels:fashion_mnist": "c26a876b6ab3",
        "grid:fashion_mnist": "3d6bc2eb969f",
        "lm_students": "edce1b3da35d",  # seq_sweep added (issue 24, F5)
        "trace_students": "6c5091e9c692",
    },
    "full": {
        "teacher:mnist:ensemble": "857a7dab2e00",
        "teacher:mnist:cnn": "9da03cebf10d",
        "teacher:mnist:mlp": "22835154704b",
        "teacher:fashion_mnist:ensemble": "3636e33aa248",
        "teacher:fashion_mnist:cnn": "7d3242bc6eae",
        "teacher:fashion_mnist:mlp": "65a11d3de718",
        "teacher:cifar10:resnet": "50939965948f",
        "teacher:mnist:default": "857a7dab2e00",
        "text:shakespeare": "77c84f565c20",
        "synthetic_sets": "f3032d817c38",
        "compression": "1abbd6e680c4",
        "tour": "ef72a27d07cf",
        "hinton2015": "04045ed144b3",
        "few_labels:mnist": "6cec4903da70",
        "grid:mnist": "f056403267ee",
        "few_labels:fashion_mnist": "08ae565fa95d",
        "grid:fashion_mnist": "41a0e3e95a2f",
        "lm_students": "016d02b2b55b",  # seq_sweep added (issue 24, F5)
        "trace_students": "8e7e3e251eee",
    },
}


def _recipes() -> dict:
    recs = {f"teacher:{ds}:{arch}": teachers.recipe(ds, arch)
            for ds in ("mnist", "fashion_mnist") for arch in ("ensemble", "cnn", "mlp")}
    recs.update({"teacher:cifar10:resnet": teachers.recipe("cifar10"),
                 "teacher:mnist:default": teachers.recipe("mnist"),
                 "text:shakespeare": zoo.text_recipe(), "synthetic_sets": synthetic_sets.recipe(),
                 "compression": compression.recipe(), "tour": tour.recipe(), "hinton2015": hinton2015.recipe(),
                 "lm_students": lm_students.recipe(), "trace_students": trace_students.recipe()})
    for ds in ("mnist", "fashion_mnist"):
        recs[f"few_labels:{ds}"], recs[f"grid:{ds}"] = few_labels.recipe(ds), grid.recipe(ds)
    return recs


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_every_recipe_keeps_its_cache_key(monkeypatch, mode):
    monkeypatch.setenv("KD_QUICK", "1" if mode == "quick" else "0")
    recs = _recipes()
    assert set(recs) == set(KEYS[mode])
    for name, rec in recs.items():
        assert isinstance(rec, Recipe), name
        assert rec.key == cache.key(rec.asdict()) == cache.key(dataclasses.asdict(rec)) == cache.key(rec), name
        assert rec.key == KEYS[mode][name], f"{name}: the cache key moved, so every cached {name} would be rebuilt"


def test_asdict_is_plain_nested_data_of_the_old_shape(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    ensemble = teachers.recipe("mnist").asdict()
    assert ensemble["arch"] == "ensemble" and [m["arch"] for m in ensemble["members"]] == ["TeacherCNN", "MLPTeacher"]
    assert ensemble["members"][1]["hidden"] == [1200, 1200]  # a list, as the dict recipe had it
    syn = synthetic_sets.recipe().asdict()
    assert syn["synthesis"]["steps"] == synthetic_sets.recipe().synthesis.steps == 24 and syn["snapshots"] == [12]
    assert hinton2015.recipe().asdict()["seeds"] == (0,) and compression.recipe().asdict()["hidden"] == (400, 400)
    assert grid.recipe("mnist").asdict()["teacher"] == teachers.recipe("mnist").key


def test_replace_returns_a_validated_copy_and_the_original_is_frozen(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    rec = tour.recipe()
    other = rec.replace(steps=10)
    assert (other.steps, rec.steps) == (10, 150) and other.key != rec.key and other.replace(steps=150) == rec
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.steps = 3
    with pytest.raises(ValueError, match=r"TourRecipe\.steps=-1: must be > 0"):
        rec.replace(steps=-1)
    with pytest.raises(ValueError, match=r"TourRecipe has no field\(s\) \['stpes'\]; use some of"):
        rec.replace(stpes=10)
    with pytest.raises(TypeError, match=r"read rec\.steps, not rec\['steps'\]"):
        rec["steps"]


def test_an_int_for_a_float_field_names_the_same_cache_file():
    assert tour.recipe(T=4).T == 4.0 and isinstance(tour.recipe(T=4).T, float)
    assert tour.recipe(T=4).key == tour.recipe(T=4.0).key == tour.recipe().key


def test_a_new_dataset_gets_its_own_teacher_key():
    rec = grid.recipe("mnist")
    fashion = rec.replace(dataset="fashion_mnist")
    assert fashion.teacher == teachers.recipe("fashion_mnist").key != rec.teacher
    assert fashion.key == grid.recipe("fashion_mnist").key


@pytest.mark.parametrize("make, field, value, message", [
    (tour.recipe, "steps", -1, "must be > 0"),
    (tour.recipe, "lr", 0, "must be > 0"),
    (tour.recipe, "alpha", 1.5, r"must be in \[0, 1\]"),
    (tour.recipe, "steps", "100", r"\(str\): expected int"),
    (tour.recipe, "steps", 2.5, r"\(float\): expected int"),
    (tour.recipe, "n_train", True, r"\(bool\): expected int"),
    (few_labels.recipe, "n_labeled", 6000, "must be <= n_pool=5000"),
    (few_labels.recipe, "student_width", 0, "must be > 0"),
    (grid.recipe, "steps", 0, "must be > 0"),
    (compression.recipe, "prune_amount", 1.2, r"must be in \[0, 1\]"),
    (compression.recipe, "hidden", (400, 0), "pass positive layer widths"),
    (hinton2015.recipe, "n_val_used", 6000, "must be <= n_val=5000"),
    (hinton2015.recipe, "seeds", (), "pass at least one value"),
    (hinton2015.recipe, "transfer_teacher", "resnet", "use one of"),
    (synthetic_sets.recipe, "snapshots", [25], r"each must be in \[1, synthesis.steps=24\]"),
    (synthetic_sets.recipe, "synthesis", {"steps": 8}, "expected SynthesisOptions"),
    (lm_students.recipe, "size", "huge", r"use one of \['tiny', 'small'\]"),
    (lm_students.recipe, "topk_sweep", (1, "all"), r"expected tuple\[int \| None, \.\.\.\]"),
    (trace_students.recipe, "longer", 1, "must be >= digits=2"),
    (zoo.text_recipe, "n_heads", 3, "must divide d_model=64"),
    (lambda **kw: teachers.recipe("mnist", "cnn", **kw), "augment", "rotate", r"use one of \['none', 'shift'"),
    (lambda **kw: teachers.recipe("mnist", "cnn", **kw), "optimizer", "adam", "use one of"),
    (lambda **kw: teachers.recipe("mnist", "mlp", **kw), "hidden", [1200, "x"], r"expected list\[int\]"),
])
def test_a_bad_field_raises_value_error_naming_it(monkeypatch, make, field, value, message):
    monkeypatch.setenv("KD_QUICK", "1")
    with pytest.raises(ValueError, match=rf"Recipe\.{field}={value!r}".replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]") + ".*" + message):
        make(**{field: value})


def test_unknown_fields_and_datasets_are_refused():
    with pytest.raises(ValueError, match=r"no field\(s\) \['n_imgs'\]"):
        synthetic_sets.recipe(n_imgs=10)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        few_labels.recipe("svhn")
    with pytest.raises(ValueError, match="corpus='tolstoy' is not a text corpus"):
        zoo.text_recipe("tolstoy")
