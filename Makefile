# Two commands on a fresh machine with Python 3.11+ and git:  make demo  ·  make test
# Both create .venv (if absent) and install crispml with the tested, pinned set of backends.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= all,dev

.PHONY: install demo quickstart test lint typecheck bench docs docs-site lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip byte-compiles at install time (PYTHONDONTWRITEBYTECODE=1 is set here, so a venv
# without .pyc files would recompile every module at every start).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --compile -c constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -m compileall -q core plugins  # the editable sources too: pip compiles only site-packages
	touch $(STAMP)

install: $(STAMP)

# The flagship (examples/churn/): Feast, Great Expectations, scikit-learn, MLflow, BentoML,
# Evidently and Prefect end to end — train and serve, traffic, drift, retrain, a schedule — then
# every process it started is stopped. PORT: the deployment's port; PREFECT_PORT: the server's.
# CRISPML_PROJECT pins the project to the example's folder: a stray .crispml/ in a parent folder
# (the project is the nearest ancestor holding one, as git finds its work tree) must not capture it.
PORT         ?= 3000
PREFECT_PORT ?= 4200
demo: install
	cd examples/churn && CRISPML_PROJECT=$(CURDIR)/examples/churn ../../$(BIN)/python demo.py --port $(PORT) --prefect-port $(PREFECT_PORT)

# The quickstart end to end: validate, train, evaluate, register, deploy (recipe, then the same
# through the Python API), one prediction from the served champion; then the server is stopped
# (`crispml deploy churn@champion` serves it again).
quickstart: install
	cd examples/quickstart && export CRISPML_PROJECT=$(CURDIR)/examples/quickstart && { ../../$(BIN)/crispml run recipe.yaml && ../../$(BIN)/python run.py \
	  && ../../$(BIN)/python predict.py; status=$$?; ../../$(BIN)/crispml undeploy churn || true; exit $$status; }

# Two workers, one test file each at a time (--dist loadfile keeps a file's module fixtures and
# its order in one process): most tests wait on real servers and subprocesses, so two workers on
# a 2-core machine finish the suite in about half the time. TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

lint: install
	$(BIN)/ruff check core plugins tests examples benchmarks
	$(BIN)/mypy core/crispml

docs: install
	$(BIN)/python -m crispml._docgen > docs/hooks.md

# The docs site (mkdocs.yml) into site/: --strict with mkdocs.yml's `validation:` fails on a broken
# link or anchor, a page missing from nav, or a snippet whose file is gone.
docs-site: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Each prints its figures (docs/performance.md records them); bench_bentoml starts servers on 127.0.0.1.
bench: install
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_gx.py
	$(BIN)/python benchmarks/bench_mlflow.py
	$(BIN)/python benchmarks/bench_bentoml.py
	$(BIN)/python benchmarks/bench_prefect.py
	$(BIN)/python benchmarks/bench_candidates.py
	$(BIN)/python benchmarks/bench_evidently.py
	$(BIN)/python benchmarks/bench_proxy.py
	$(BIN)/python benchmarks/bench_feast.py

# Re-pin the tested set after changing an extra (then run make test).
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" "fastapi>=0.150,<0.155"
	( echo "# The tested, co-installable set of every backend (make install passes it to pip as -c)."; \
	  echo "# Regenerate with: make lock   (after changing pyproject.toml's extras)"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(crispml|pip|setuptools)==' ) > constraints.txt

clean:
	rm -rf $(VENV) .crispml examples/*/.crispml site
