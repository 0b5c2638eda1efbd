"""kd_lessons.methods.registry: every method builds and trains, names are unique, the tables and README follow it."""
import importlib.util
import math
import pathlib
import re

import pytest
import torch

from kd_lessons.generative import lm_objectives as gm
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.methods import registry
from kd_lessons.methods.contrastive import CRD
from kd_lessons.methods.logits import DIST, DKD, LogitStandardizedKD
from kd_lessons.methods.relations import RKD
from kd_lessons.models import CNNStudent, MLPStudent, TeacherCNN
from kd_lessons.objectives import CrossEntropy, HintonKD, Objective
from kd_lessons.runs import lm_students, tour
from kd_lessons.train import TrainOptions

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE_OBJECTIVES = [(s.name, s.family) for s in registry.methods(families=("none", "logits", "relations",
                                                                              "contrastive", "features"))]
SCHEMES = [s.name for s in registry.methods("scheme")]
GENERATIVE = [s.name for s in registry.methods("generative")]
TEXT = {"T": 1.0, "alpha": 1.0, "batch_size": 4, "onpolicy_prompt": 4, "lam": 1.0, "beta": 0.5, "topk": 3,
        "topk_renormalize": True}  # the recipe keys the generative methods read (lm_students.recipe has them all)
V, L = 11, 12
CRD_NAME = "KD + CRD (in-batch)"  # Hinton's loss plus the term (the papers' "RKD"/"CRD" rows train without KD)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _grad_norm(model: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)


def test_names_are_unique_per_task_and_a_second_registration_raises():
    specs = registry.methods()
    for task in ("images", "text"):
        names = [s.name for s in specs if s.task == task]
        assert len(names) == len(set(names)) and names
    assert {s.family for s in specs} == set(registry.FAMILIES)
    for name, family in (("DKD", "logits"), ("DKD", "relations"), ("token KD", "generative")):
        with pytest.raises(ValueError, match="already registered"):
            registry.register(name, family, "Zhao et al. 2022")(HintonKD)
    assert [s.name for s in registry.methods()] == [s.name for s in specs]  # nothing was added by the failures


def test_get_finds_a_method_and_names_the_registered_ones_when_it_cannot():
    assert registry.get("DKD").target is DKD and registry.get("scratch", "generative").family == "generative"
    with pytest.raises(ValueError, match=r"no method named 'DKDD'.*registered: \[.*'DKD'"):
        registry.get("DKDD")
    with pytest.raises(ValueError, match="pass family="):  # both tasks have a scratch baseline
        registry.get("scratch")
    with pytest.raises(ValueError, match="unknown families"):
        registry.methods("feature")


def test_register_checks_what_it_is_given():
    with pytest.raises(ValueError, match="family='logit'"):
        registry.register("x", "logit", "Zhao et al. 2022")
    with pytest.raises(ValueError, match="paper=''"):
        registry.register("x", "logits", "")
    with pytest.raises(ValueError, match=r"recipe_keys \['T'\] have no paper default"):
        registry.register("x", "logits", "Zhao et al. 2022", {}, recipe_keys=("T",))
    with pytest.raises(ValueError, match=r"defaults \['temperature'\] are not parameters of HintonKD"):
        registry.register("x", "logits", "Zhao et al. 2022", {"temperature": 4.0})(HintonKD)
    assert "x" not in [s.name for s in registry.methods()]


def test_setting_reads_a_dict_or_a_dataclass_recipe():
    rec = tour.recipe(n_train=100, steps=5)
    assert registry.setting(rec, "T") == 4.0 and registry.setting({"T": 2.0}, "T") == 2.0
    with pytest.raises(ValueError, match="has no 'beta'"):
        registry.setting({"T": 2.0}, "beta")


@pytest.mark.parametrize("name, family", IMAGE_OBJECTIVES)
def test_every_image_objective_gives_a_finite_loss_with_a_gradient(name, family):
    spec = registry.get(name, family)
    torch.manual_seed(0)
    teacher = TeacherCNN(width=2).eval()
    student = CNNStudent(width=4) if spec.family == "features" else tour.make_student()
    objective = spec.build(teacher, tour.recipe(n_train=100, steps=5))
    if not isinstance(objective, Objective):  # a student -> objective function (CRD heads, FitNets regressors)
        objective = objective(student)
    assert isinstance(objective, Objective)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    with torch.no_grad():
        teacher_out = teacher(x, return_features=objective.uses_features)
    loss = objective(student(x, return_features=objective.uses_features), teacher_out, y)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert _grad_norm(student) > 0


@pytest.mark.parametrize("name", SCHEMES)
def test_every_scheme_trains_the_student_it_returns(name, mnist_subset):
    x, y, _, _ = mnist_subset(64, 10)
    torch.manual_seed(0)
    teacher = TeacherCNN(width=2).eval()
    train = registry.get(name, "scheme").build(teacher, tour.recipe(n_train=64, steps=2))
    kw = {"num_epochs": 1, "lr": 3e-3, "options": TrainOptions(batch_size=32, progress=False, max_steps=2)}
    student = train(tour.make_student, x, y, 0, **kw)
    torch.manual_seed(0)
    fresh = tour.make_student()  # the scheme seeds its student's initialisation with the seed (0) too
    assert isinstance(student, MLPStudent) and torch.isfinite(student(x[:4])).all()
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(), fresh.state_dict().values()))


def _text_models():
    torch.manual_seed(0)
    return CharTransformer(V, 16, 1, 2, L).eval(), CharTransformer(V, 16, 1, 2, L)


@pytest.mark.parametrize("name", GENERATIVE)
def test_every_generative_method_gives_a_finite_loss_with_a_gradient(name):
    teacher, student = _text_models()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, V, (4, L), generator=g), torch.randint(0, V, (4, L), generator=g)
    transfer = {"ids": torch.randint(0, V, (6, L + 1), generator=g), "prompt_len": 4}
    with torch.no_grad():
        values, idx = torch.log_softmax(teacher(x), -1).topk(3, dim=-1)
    pool = {"x": x, "y": y, "idx": idx.to(torch.int16), "logprobs": values}
    meter = gm.CostMeter()
    plug = registry.get(name, "generative").build(teacher, TEXT, meter=meter, seed=0, transfer=transfer, pool=pool)
    batch_fn = getattr(plug, "batch_fn", None)
    xb, yb = batch_fn(g) if batch_fn else (x, y)
    loss = plug(student, xb, yb)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert _grad_norm(student) > 0 and meter.trained_positions > 0 and meter.corpus_batches + meter.sampled_batches


def test_the_tour_builds_the_objectives_it_built_before_the_registry():
    teacher, rec = TeacherCNN(width=2), tour.recipe(n_train=100, steps=5)
    T, alpha = registry.setting(rec, "T"), registry.setting(rec, "alpha")
    before = {"scratch": CrossEntropy(), "Hinton KD": HintonKD(T, alpha), "DKD": DKD(T=T), "DIST": DIST(),
              "logit standardisation": LogitStandardizedKD(T=2.0, alpha=alpha), "KD + RKD": RKD(T=T, alpha=alpha)}
    built = tour.methods(teacher, rec)
    assert {k: repr(v) for k, v in built.items() if k != CRD_NAME} == {k: repr(v) for k, v in before.items()}
    torch.manual_seed(0)
    crd = built[CRD_NAME](tour.make_student())
    torch.manual_seed(0)
    expected = CRD.for_models(tour.make_student(), teacher, (1, 28, 28), T=T, alpha=alpha)
    assert repr(crd) == repr(expected)
    assert all(torch.equal(a, b) for a, b in zip(crd.state_dict().values(), expected.state_dict().values()))


def test_lm_students_builds_the_plugins_it_built_before_the_registry():
    teacher, _ = _text_models()
    shared = {"transfer": {"ids": torch.zeros(3, L + 1, dtype=torch.long), "prompt_len": 4},
              "pool": {"x": torch.zeros(3, L, dtype=torch.long), "idx": torch.zeros(3, L, 5, dtype=torch.int16)}}
    rec = {**TEXT, "lam": 0.5, "onpolicy_prompt": 6, "topk": 5}
    token, _, _ = lm_students._plugin("token KD", teacher, rec, shared, 0)
    assert (token.teacher, token.T, token.alpha) == (teacher, 1.0, 1.0)
    for name, divergence in (("on-policy GKD", "jsd"), ("reverse KL on-policy", "reverse")):
        plug, batch_fn, meter = lm_students._plugin(name, teacher, rec, shared, 3)
        assert (plug.divergence, plug.beta, plug.lam, plug.prompt_len, plug.meter) == (divergence, 0.5, 0.5, 6, meter)
        assert batch_fn is None and torch.equal(plug.coin.get_state(), torch.Generator().manual_seed(3).get_state())
    seq, batch_fn, _ = lm_students._plugin("seq-level KD", teacher, rec, shared, 0)
    assert seq.batch_size == 4 and seq.prompt_len == 4 and batch_fn == seq.batch_fn
    topk, _, _ = lm_students._plugin("top-k KD", teacher, rec, shared, 0)
    assert (topk.k, topk.renormalize, topk.batch_size) == (5, True, 4)
    topk, _, _ = lm_students._plugin("top-k KD", teacher, rec, shared, 0, k=2, renormalize=False)  # the sweep
    assert (topk.k, topk.renormalize) == (2, False)
    scratch, batch_fn, meter = lm_students._plugin("scratch", teacher, rec, shared, 0)
    scratch(CharTransformer(V, 16, 1, 2, L), torch.zeros(2, L, dtype=torch.long), torch.zeros(2, L, dtype=torch.long))
    assert batch_fn is None and (meter.corpus_batches, meter.trained_positions) == (1, 2 * L)


def test_the_tables_are_the_registry_in_the_course_order():
    assert list(tour.FAMILIES) == [s.name for s in registry.methods(families=tour.TOUR_FAMILIES)] == [
        "scratch", "Hinton KD", "DKD", "DIST", "logit standardisation", "KD + RKD", CRD_NAME]
    assert list(tour.SCHEMES) == SCHEMES == ["teacher assistant", "born-again", "mutual learning", "function matching"]
    assert list(lm_students.METHODS) == GENERATIVE == ["scratch", "token KD", "seq-level KD", "on-policy GKD",
                                                      "reverse KL on-policy", "top-k KD"]


def test_a_method_registered_in_one_place_joins_the_tour_and_its_summary():
    @registry.register("dummy KD", "logits", "Hinton et al. 2015", {"T": 4.0, "alpha": 0.5}, recipe_keys=("T",))
    class DummyKD(HintonKD):
        """Hinton's loss under another name: a method added by one decorated class."""

    try:
        built = tour.methods(TeacherCNN(width=2), tour.recipe(n_train=100, steps=5))
        assert list(built)[-1] == "dummy KD" and isinstance(built["dummy KD"], DummyKD)
        assert (built["dummy KD"].T, built["dummy KD"].alpha) == (4.0, 0.5)
        assert "| dummy KD | logits | Hinton et al. 2015 |" in registry.markdown_table()
    finally:
        registry.unregister("dummy KD")
    assert "dummy KD" not in tour.methods(TeacherCNN(width=2), tour.recipe(n_train=100, steps=5))


def test_the_readme_holds_the_registry_table_and_every_paper_is_in_the_references():
    spec = importlib.util.spec_from_file_location("method_table", ROOT / "scripts" / "method_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script.section() in readme, "README's method table is stale: run scripts/method_table.py --write"
    references = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    uncited = set()
    for s in registry.methods():
        cites = re.findall(r"([A-Z][a-z]+)(?: et al\.| & [A-Z][a-z]+)? (\d{4})", s.paper)
        if not cites:
            uncited.add((s.name, s.family))
        for author, year in cites:
            assert re.search(rf"\*\*{author}, .*\({year}\)", references), f"{s.name}: {author} {year} not cited"
    assert uncited == {("scratch", "none"), ("scratch", "generative"), ("top-k KD", "generative")}
