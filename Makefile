# The two commands (README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install everything from PyPI on first use; later runs reuse it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.hwnet-installed
BENCH_STAMP = $(VENV)/.hwnet-bench-installed
JOBS   ?= 2

.PHONY: demo test test-fast bench bench-pe bench-methods bench-estimate bench-roofline bench-boards install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hwnet demo --out build/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) tests rtl_tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) tests -m "not rtl"

bench: $(STAMP)
	$(BIN)/python bench/bench_foundation.py
	$(BIN)/python bench/bench_pe.py --jobs $(JOBS)

bench-pe: $(STAMP)
	$(BIN)/python bench/bench_pe.py --jobs $(JOBS)

bench-estimate: $(STAMP)
	$(BIN)/python bench/bench_estimate.py

bench-roofline: $(STAMP)
	$(BIN)/python bench/bench_roofline.py

bench-boards: $(STAMP)
	$(BIN)/python bench/bench_boards.py

# The training-methods benchmark needs the bench extra (Brevitas, for its baseline) on top of the install.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

bench-methods: $(BENCH_STAMP)
	$(BIN)/python bench/bench_methods.py

clean:
	rm -rf build .pytest_cache
