# The README's contract: `make demo` runs the main job end to end, `make test` runs all tests.
# Both create .venv (Python 3.11, torch==2.13.0 CPU, setuptools<81) on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-study study study-budget venv clean-reports

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools<81" wheel
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mu)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mu demo

# pytest exits 5 when it collects nothing; that is not a failure of the suite itself.
test: $(STAMP)
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(PY) -m bench

# The real study's unit costs (xlm-roberta-base size, MASSIVE text) and its projected total; after `make bench`.
MASSIVE ?= ../shared/massive/1.1
bench-study: $(STAMP)
	$(PY) -m bench.study --massive $(MASSIVE)

# The study at its real shape on real MASSIVE (profile mini; README "Real MASSIVE (mini profile)"): needs
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

clean-reports:
	rm -rf reports/0* cache/logits
