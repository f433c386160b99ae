# sslmed — every target creates .venv on first use and re-installs when pyproject.toml changes.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= smoke
# runs trained side by side by `make paper`: one per core on CPU profiles, one for full (a GPU each; torchrun for more)
PROCS   ?= $(if $(filter full,$(PROFILE)),1,$(shell nproc 2>/dev/null || echo 1))
# notebooks run side by side after the runs are trained (their serial parts overlap; a feature file is extracted once)
JOBS    ?= $(PROCS)
# one thread per process keeps parallel notebook tests from oversubscribing small machines
export OMP_NUM_THREADS ?= 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install test test-portable nbtest pytest paper lab docs bench readme export clean-nbs sync-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP) sync-check nbtest pytest

# the library must match the notebooks, and notebooks must be clean
sync-check: $(STAMP)
	@before="$$(git status --porcelain -- sslmed nbs 2>/dev/null)"; \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	after="$$(git status --porcelain -- sslmed nbs 2>/dev/null)"; \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export/nbdev-clean changed files: commit the notebooks' export"; git status --porcelain -- sslmed nbs; exit 1; fi

nbtest: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2 --timing

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests/

# every statistical assertion under the default, avx2 and native CPU kernels with 1 and 2 threads (about 30 min on 2 cores)
test-portable: $(STAMP)
	OMP_NUM_THREADS= $(BIN)/python tests/portable.py $(ARGS)

paper: $(STAMP)
	$(BIN)/sslmed paper --profile $(PROFILE) --procs $(PROCS) --jobs $(JOBS)

bench: $(STAMP)
	OMP_NUM_THREADS= $(BIN)/python benchmarks/sigreg.py

lab: $(STAMP)
	$(BIN)/python -c "from sslmed.paper import kernel_name; kernel_name()"  # the one kernelspec, as `sslmed paper` installs it
	$(BIN)/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

readme: $(STAMP)
	$(BIN)/sslmed readme

export: $(STAMP)
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	$(BIN)/sslmed docs --profile $(PROFILE)
