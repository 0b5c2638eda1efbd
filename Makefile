# kd-lessons: `make app` runs the course, `make test` runs every test. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Passive OpenMP waiting: training steps ran ~10x slower with spinning threads when the cores were shared
# (README, Settings). It must be in the environment before torch starts, so it is set here, not in code.
export OMP_WAIT_POLICY ?= PASSIVE
STAMP  := $(VENV)/.kd-installed

.PHONY: setup system-deps data app lab lint test test-fast test-lesson bench strip solutions check-lab gpu-check clean \
	site load-test wheel full

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Debian packages: Chromium for the browser test, Fashion-MNIST's offline copy. Skipped without apt.
system-deps:
	@bash scripts/system-deps.sh

data: setup
	$(BIN)/python -m kd_lessons data

app: setup data
	$(BIN)/streamlit run app.py

# The project's JupyterLab defaults (jupyter/overrides.json): no "fetch Jupyter news?" popup over the first lesson.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): jupyter/overrides.json $(STAMP)
	mkdir -p $(dir $@) && cp jupyter/overrides.json $@

lab: setup data $(LAB_OVERRIDES)
	$(BIN)/jupyter lab notebooks/

# ruff (settings in pyproject.toml): pyflakes, pycodestyle, import order, complexity <= 10, bugbear; notebooks too.
LINT_PATHS := kd_lessons tests app.py bench scripts notebooks
lint: setup
	$(BIN)/ruff check $(LINT_PATHS)

# pytest-xdist barely pays on the shared 2-core machine (one process vs -n 2 --dist loadfile, load 1-3 from other
# work: make test-fast's 1,472 tests 110 s vs 104 s; 287 loss and data tests 21 s vs 46 s; 110 training tests
# 10-14 s vs 15-23 s: torch already uses both cores), so the suite runs in one process. To try it:
# XDIST="-n 2 --dist loadfile" (one file per worker, so a notebook's cells stay in order; nbval works so).
XDIST ?=
NBVAL := --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg
test: setup system-deps data lint
	KD_QUICK=1 $(BIN)/python -m pytest tests notebooks $(NBVAL) $(XDIST) -p no:cacheprovider

test-fast: setup
	KD_QUICK=1 $(BIN)/python -m pytest tests -m "not slow and not browser" $(XDIST) -p no:cacheprovider

# What one lesson rests on: `make test-lesson N=12` runs the tests marked lesson12 (the table in tests/conftest.py)
# and notebook 12 itself (with its solved copy, if any).
LESSON = $(shell echo "$(N)" | awk '{ printf "%02d", $$1 }')
test-lesson: setup data
	@test -n "$(N)" || { echo "usage: make test-lesson N=12"; exit 2; }
	KD_QUICK=1 $(BIN)/python -m pytest tests $(wildcard notebooks/$(LESSON)_*.ipynb notebooks/solutions/$(LESSON)_*.ipynb) \
		-m lesson$(LESSON) $(NBVAL) $(XDIST) -p no:cacheprovider

# Every lesson in full mode (the course's own sizes), executed copies in build/full/; each lesson's numbers, asserts
# and stage times go to results/NN_lesson.json (committed). LESSONS="11 12" runs a subset. Fails if any cell raised.
LESSONS ?=
full: setup data
	$(BIN)/python scripts/run_full.py $(if $(strip $(LESSONS)),--lessons $(LESSONS))

bench: setup data
	$(BIN)/python bench/bench_epoch.py
	$(BIN)/python bench/bench_logit_store.py
	$(BIN)/python bench/bench_speculative.py

# A class on one server: 10 simulated sessions move sliders (p50/p95 redraw, errors); "train now" queues.
load-test: setup data
	$(BIN)/python bench/load_app.py $(LOAD_FLAGS)

# The rendered course in build/site/html: every lesson executed (SITE_MODE=auto: full with a CUDA GPU, else quick),
# equations by a pinned MathJax from npm (cached in ~/.cache/kd_lessons/site), so the pages work offline.
SITE_MODE ?= auto
site: setup system-deps data
	$(BIN)/python scripts/build_site.py --mode $(SITE_MODE)

# The wheel (dist/kd_lessons-*.whl) with the lessons inside: pip install it anywhere, or upload it beside a notebook.
wheel: setup
	$(BIN)/python -m build --no-isolation --outdir dist .

strip: setup
	$(BIN)/python scripts/strip_notebooks.py notebooks

# Regenerate notebooks/solutions/ from the learner copy after editing 09_coding_exercises.ipynb.
solutions: setup
	$(BIN)/python scripts/build_solutions.py

# Real JupyterLab in headless Chromium: notebook 02 runs and its T slider redraws the plot.
check-lab: setup system-deps $(LAB_OVERRIDES)
	$(BIN)/python scripts/check_lab.py

# On a machine with an NVIDIA GPU: the suite on CUDA, notebooks 04, 06, 07 in full mode and the bench, with
# logs and summary.txt in artifacts/gpu-check/. GPU_CHECK_FLAGS="--force-cpu --quick" tests the script on a CPU.
gpu-check: setup data
	GPU_CHECK_PYTHON=$(BIN)/python bash scripts/gpu_check.sh $(GPU_CHECK_FLAGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
