# One entry point for the whole monorepo. `make help` lists every target.
# Each paper adds its own targets in mk/<subproject>.mk (included below).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel is what this project is tested on; pass TORCH_SPEC='torch==X+cuYYY' (or a
# wheel path) for a GPU machine.
TORCH_SPEC ?= torch==2.13.0
TEST_JOBS ?= 2
STAMP := $(VENV)/.installed
INSTALL_INPUTS := pyproject.toml requirements-test.txt $(wildcard */requirements.txt)
# CPU threads for the step targets: every script applies --num_threads (common/threads.py; default: the cores
# the process may use). On the synthetic data the models are tiny and extra threads only contend with other work
# (a 5 s step becomes 0.4 s at 1 thread on a busy 2-core machine), so the default here is 1 without DATA_DIR.
# NUM_THREADS=N sets it; NUM_THREADS= (empty) leaves it to the scripts' own policy.
NUM_THREADS ?= $(if $(DATA_DIR),,1)
THREADS_FLAG = $(if $(strip $(NUM_THREADS)),--num_threads $(NUM_THREADS))
# Subproject .mk files append their demo target here.
DEMO_TARGETS :=

.DEFAULT_GOAL := help
.PHONY: help install test demo bench clean

# Variables named in help texts are shown with their values (e.g. the run directory in use).
HELP_VARS = $(sort $(shell grep -ho '\#\# .*' $(MAKEFILE_LIST) | grep -o '\$$([A-Za-z0-9_]*)' | tr -d '$$()'))

help: ## List every target with one line each
	@awk -v subs='$(subst | ,|,$(foreach v,$(HELP_VARS),$(v)=$($(v))|))' 'BEGIN {FS = ":.*## "; \
		n = split(subs, kv, "|"); for (i = 1; i <= n; i++) if (kv[i] != "") { p = index(kv[i], "="); \
		name[i] = substr(kv[i], 1, p - 1); val[i] = substr(kv[i], p + 1) } } \
		/^[a-zA-Z0-9_.-]+:.*## / {t = $$2; for (i in name) gsub("\\$$\\(" name[i] "\\)", val[i], t); \
		printf "  %-32s %s\n", $$1, t}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv and install the project (editable, all extras) and its test tools

$(STAMP): $(INSTALL_INPUTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[all,test]"
	@touch $(STAMP)

test: install ## Run the whole test suite (what CI runs)
	$(PY) -m pytest -n $(TEST_JOBS) tests

demo: install ## Run every paper's pipeline on embedded synthetic data; reports go to runs/demo/
	@if [ -z "$(strip $(DEMO_TARGETS))" ]; then \
		echo "No subproject demo stage exists yet."; \
	else \
		$(MAKE) --no-print-directory $(DEMO_TARGETS) || exit 1; \
	fi
	@echo "Demo reports: $(CURDIR)/runs/demo/"

# Filled after the mk/*.mk includes below with every <paper>-bench target they define.
BENCH_TARGETS :=

bench: install ## Every speed table: common.metrics vs pycocoevalcap, then each paper's <paper>-bench
	$(PY) benchmarks/metrics.py
	@for target in $(BENCH_TARGETS); do $(MAKE) --no-print-directory $$target || exit 1; done

clean: ## Remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

include $(sort $(wildcard mk/*.mk))

# every <paper>-bench / regions-bench target defined in mk/*.mk
BENCH_TARGETS += $(filter %-bench,$(shell sed -n 's/^\([a-zA-Z0-9_.-]*-bench\):.*/\1/p' $(sort $(wildcard mk/*.mk))))
