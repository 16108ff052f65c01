# The commands a newcomer needs: `make run` and `make test`. Each sets itself up
# (a venv in .venv, the Python dependencies, the compiled core) on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CORE_SOURCES := $(wildcard core_ext/*.pyx core_ext/*.pxd) core_ext/codes.py core_ext/limits.py setup.py
BUILT := core_ext/.built
DATA ?= var
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 300
SOAK_KILLS ?= 100
SOAK_SEED ?= 1

.PHONY: run test bench debug annotate profile fuzz soak build clean docs

run: build
	PYTHONUNBUFFERED=1 $(PY) -m switch.demo --data $(DATA)

test: build
	$(PY) -m pytest $(PYTEST_ARGS)

bench: build
	$(PY) -m pytest bench -p no:cacheprovider --benchmark-only --benchmark-columns=median,iqr,ops,rounds $(PYTEST_ARGS)

# The profiling/debug build: annotate HTML, linetrace, CYTHON_TRACE_NOGIL, debug checks.
debug: $(INSTALLED)
	SWITCH_DEBUG=1 $(PY) setup.py build_ext --inplace --force
	rm -f $(BUILT)

annotate: $(INSTALLED)
	SWITCH_ANNOTATE=1 $(PY) setup.py build_ext --inplace --force
	@echo "annotation: core_ext/*.html"

# The release core under a fixed, seeded payment workload (bench/profile_pipeline.py): cProfile, and
# py-spy and callgrind when installed; reports in ./profile/. How to read them: docs/PROFILING.md.
PROFILE_PAYMENTS ?= 100000
PROFILE_CALLGRIND_PAYMENTS ?= 20000
profile: build
	mkdir -p profile
	$(PY) bench/profile_pipeline.py --payments $(PROFILE_PAYMENTS) --cprofile profile/cprofile.txt
	@if [ -x $(VENV)/bin/py-spy ]; then \
	  $(VENV)/bin/py-spy record --native --rate 500 -o profile/flame.svg -- \
	    $(PY) bench/profile_pipeline.py --payments $$((3 * $(PROFILE_PAYMENTS))); \
	else echo "py-spy not installed (pip install py-spy): no flame graph"; fi
	@if command -v valgrind >/dev/null; then \
	  valgrind --tool=callgrind --collect-atstart=no '--toggle-collect=__pyx_pw_*Pipeline_*run' \
	    --callgrind-out-file=profile/callgrind.out \
	    $(PY) bench/profile_pipeline.py --payments $(PROFILE_CALLGRIND_PAYMENTS) 2>profile/callgrind.log && \
	  callgrind_annotate --inclusive=yes --auto=no profile/callgrind.out > profile/callgrind.txt && \
	  $(PY) bench/profile_pipeline.py --payments $(PROFILE_CALLGRIND_PAYMENTS) \
	    --callgrind-summary profile/callgrind.out | tee profile/callgrind-summary.txt; \
	else echo "valgrind not installed: no instruction counts"; fi
	@echo "reports: profile/cprofile.txt (Python side), profile/flame.svg (py-spy --native)," \
	  "profile/callgrind.txt and profile/callgrind-summary.txt (instructions, Pipeline.run only)"

# Every atheris target of tests/fuzz for FUZZ_SECONDS each; prints executions and findings per target.
fuzz: build
	$(PY) tests/fuzz/run_all.py --seconds $(FUZZ_SECONDS)

# SIGKILL the serving switch under load SOAK_KILLS times (seeded), retry, check nothing acknowledged was lost.
soak: build
	$(PY) -m bench.soak --kills $(SOAK_KILLS) --seed $(SOAK_SEED) --durability fsync
	SWITCH_CRASH_ROUNDS=200 $(PY) -m pytest tests/test_crash.py -q

docs: $(INSTALLED)
	$(PY) -m core_ext.codes --markdown > docs/ERRORS.md

build: $(BUILT)

$(BUILT): $(INSTALLED) $(CORE_SOURCES)
	$(PY) setup.py -q build_ext --inplace
	touch $(BUILT)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=68" wheel "cython>=3.0,<4"
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $(INSTALLED)

clean:
	rm -rf build core_ext/*.c core_ext/*.so core_ext/*.html core_ext/*.pxi $(BUILT) *.egg-info
