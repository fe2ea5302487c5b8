# The README's contract: `make demo` runs the main job end to end, `make test` runs all tests; `make help` lists every target.
# Both create .venv (Python 3.11, torch==2.13.0 CPU, setuptools<81) on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help demo test fmt lint test-timing lab docs docs-check bench bench-study bench-notebook02 bench-training study study-budget venv clean-reports
.DEFAULT_GOAL := help

help: ## this list (each target's one line is the comment after its name)
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-13s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv (Python 3.11, torch CPU, the package editable with its test extras)

# uv installs the same pins as pip in seconds, not minutes, from wherever pip is set to install from (its
# index, extra indexes, find-links and constraints: environment first, then pip.conf).
PIP_SETTING = $${PIP_$(2):-$$($(PY) -m pip config list 2>/dev/null | sed -n "s/^global\.$(1)='\(.*\)'$$/\1/p" | tail -1)}
# Bytecode is compiled once, on every core: pip compiled each file on one (most of a fresh venv's time), and
# where PYTHONDONTWRITEBYTECODE is set, what an import compiles is not kept. Left to compile at import:
# test suites (torch's test helpers hold Python 3.12 syntax), and the model families of transformers that mu
# never loads.
NOCOMPILE := /tests?/|/torch/testing/_internal/|/transformers/models/(?!(auto|xlm_roberta)/)

$(STAMP): pyproject.toml uv-overrides.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv>=0.5"
	UV_DEFAULT_INDEX="$(call PIP_SETTING,index-url,INDEX_URL)" \
	UV_EXTRA_INDEX_URL="$(call PIP_SETTING,extra-index-url,EXTRA_INDEX_URL)" \
	UV_FIND_LINKS="$(call PIP_SETTING,find-links,FIND_LINKS)" \
	UV_CONSTRAINT="$(call PIP_SETTING,constraint,CONSTRAINT)" \
	$(VENV)/bin/uv pip install --quiet --python $(PY) --index-strategy unsafe-best-match --override uv-overrides.txt \
		"setuptools<81" wheel "torch==2.13.0" -e ".[test]"
	$(PY) -m compileall -q -j 0 -x '$(NOCOMPILE)' $(VENV)/lib >/dev/null
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mu)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP) ## the whole toy pipeline, notebooks 01-06 on 5 targets, offline; then open reports/index.html
	$(PY) -m mu demo

# JupyterLab (the `lab` extra) on notebooks/, with the venv's `python3` kernel (installed by `venv`).
# LAB_ARGS: more options, e.g. LAB_ARGS="--no-browser --port 8890"; root (in a container) needs --allow-root.
LAB_STAMP := $(VENV)/.lab-installed
LAB_ARGS  ?= $(if $(filter 0,$(shell id -u)),--allow-root)
$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	@touch $(LAB_STAMP)
lab: $(LAB_STAMP) ## JupyterLab on notebooks/ with the project's kernel (installs the `lab` extra first)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(LAB_ARGS)

# The tables in README.md and docs/*.md, regenerated from the committed result files (docs/results/, reports/bench/).
docs: $(STAMP) ## rewrite every results table in README.md and docs/ from the committed result files
	$(PY) -m mu docs
docs-check: $(STAMP) ## exit 1 if a committed table differs from what `make docs` would write
	$(PY) -m mu docs --check

# pytest exits 5 when it collects nothing; that is not a failure of the suite itself.
lint: $(STAMP) ## ruff: the code is formatted and passes the linter (pyproject.toml [tool.ruff])
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .
fmt: $(STAMP) ## ruff: format the code and apply the linter's safe fixes
	$(VENV)/bin/ruff check --fix --quiet .
	$(VENV)/bin/ruff format --quiet .

test: $(STAMP) lint ## ruff, then every unit test and every notebook (pytest + nbmake), offline
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: $(STAMP) ## merge / evaluation / ensemble timings at xlm-roberta-base size -> reports/bench/results.{json,md}
	$(PY) -m bench

# make test as CI runs it, on a fresh clone of HEAD beside this checkout (so ../shared resolves), venv included.
test-timing: $(STAMP) ## time `bash .ci/run` on a fresh clone of HEAD -> reports/bench/make-test.json (README's table)
	$(PY) -m bench.maketest

# The real study's unit costs (xlm-roberta-base size, MASSIVE text) and its projected total; after `make bench`.
MASSIVE ?= ../shared/massive/1.1
bench-study: $(STAMP) ## the real study's unit costs on MASSIVE text and its projected total -> reports/bench/study.{json,md}
	$(PY) -m bench.study --massive $(MASSIVE)

# Notebook 02's fine-tuning and evaluation (mini profile, MASSIVE text) against a floor of plain matmuls at the same shapes.
bench-notebook02: $(STAMP) ## notebook 02's wall time per seed, before vs this study -> reports/bench/notebook02.json
	$(PY) -m bench.notebook02 --root $(STUDY_ROOT)

bench-training: $(STAMP) ## fine-tuning and N×N evaluation throughput vs a matmul floor -> reports/bench/training.{json,md}
	$(PY) -m bench.training --massive $(MASSIVE) --tokenizer $(STUDY_ROOT)/models/mini/tokenizer

# The study at its real shape on real MASSIVE (profile mini; docs/study.md): needs
# ../shared/massive/1.1 beside the checkout or MU_MASSIVE_DIR. Subsample → pretrain → 02's recipe tuned on dev →
# notebooks 01-05 over the 51 targets (05 over the declared subset) → 02-04 again per extra fine-tuning seed → 06;
# resumable (rerun it after an interruption). Outputs under STUDY_ROOT, not in the checkout; protocol.md,
# timings.json and budget.md in $(STUDY_ROOT)/reports/study/mini/.
STUDY_ROOT ?= $(CURDIR)/studies/mini
STUDY_ARGS ?= --workers 2  # the encoder recipe and subsample sizes are `python -m mu study`'s defaults (mu.study.STUDY_PRETRAIN)
study: $(STAMP) ## the mini study on real MASSIVE: tune, 01-05, the seeds' runs, 06 (resumable; times per stage)
	MU_ROOT=$(STUDY_ROOT) $(PY) -m mu study $(STUDY_ARGS)

study-budget: $(STAMP) ## the mini study's time budget per stage from its last timings (runs nothing)
	MU_ROOT=$(STUDY_ROOT) $(PY) -m mu study $(STUDY_ARGS) --budget

clean-reports: ## delete generated reports (reports/0*) and the logits cache
	rm -rf reports/0* cache/logits
