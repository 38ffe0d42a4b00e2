# Two commands: `make lab` (set up, open the notebooks) and `make test` (set up, run every test).
# Everything lands in .venv; nothing is installed outside this folder.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.netlab-installed
# as root (containers, CI) Jupyter refuses to start without --allow-root
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
LAB_ARGS ?=
# notebooks under nbval: quick sizes, and no cell may hang the run
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=120
# the short summary lists failures, errors and every skip with its reason; tests (and notebook
# cells) in file order: pytest-randomly, where installed, would shuffle them (make flake does)
REPORT := -rfEs -p no:randomly

.PHONY: lab test setup unit nbtest notebooks margins flake versions clean

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

# the solution copies are the ones that run; tests check the student copies match them
test: setup
	NETLAB_QUICK=1 $(PY) -m pytest tests notebooks/solutions $(NBVAL) $(REPORT)

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "netlab needs Python 3.10 or later (3.10-3.13 are tested); set PYTHON=python3.X, e.g. python3.12")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

unit: setup
	$(PY) -m pytest tests $(REPORT)

nbtest: setup
	NETLAB_QUICK=1 $(PY) -m pytest notebooks/solutions $(NBVAL) $(REPORT)

# re-run every solution notebook in place so the committed outputs come from a real run (class
# mode), then write the students' copies from them; NB=notebooks/solutions/03-*.ipynb for one
NB ?= notebooks/solutions/[0-9]*.ipynb
notebooks: setup
	$(PY) tools/execute_notebooks.py $(NB)
	$(PY) tools/clean_notebooks.py $(NB)
	$(PY) tools/student_copies.py $(NB)

# how close each notebook check came to failing, run as `make test` runs them (quick mode)
margins: setup
	NETLAB_QUICK=1 $(PY) tools/assert_margins.py $(NB)

# flaky tests: the unit tests N times (every second run with a CPU hog on one core), the
# notebooks once under the hog; lists every test that failed at least once. ARGS goes to pytest
# instead of `tests` (ARGS=tests/test_load.py), FLAKE_ARGS to tools/flake.py (--no-notebooks)
N ?= 5
ARGS ?=
FLAKE_ARGS ?=
flake: setup
	$(PY) tools/flake.py -n $(N) --nbval="$(NBVAL)" $(FLAKE_ARGS) -- $(ARGS)

# the unit tests once on every supported Python found here (3.10-3.13), each in .venvs/py3.X;
# VERSIONS="3.10 3.13" for some of them
VERSIONS ?=
versions:
	$(PYTHON) tools/versions.py $(if $(VERSIONS),--only $(VERSIONS)) -- $(ARGS)

clean:
	rm -rf $(VENV) .venvs .pytest_cache netlab.egg-info
