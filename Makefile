# The README's contract: `make demo` runs the main job end to end, `make test` runs all tests.
# Both create .venv (Python 3.11, torch==2.13.0 CPU, setuptools<81) on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-study study venv clean-reports

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
# ../shared/massive/1.1 beside the checkout or MU_MASSIVE_DIR. Subsample → pretrain → notebooks 01-06 over
# the 51 targets; resumable (rerun it after an interruption). Outputs under STUDY_ROOT, not in the checkout.
STUDY_ROOT ?= $(CURDIR)/studies/mini
STUDY_ARGS ?= --workers 2  # the encoder recipe and subsample sizes are `python -m mu study`'s defaults (mu.study.STUDY_PRETRAIN)
study: $(STAMP)
	MU_ROOT=$(STUDY_ROOT) $(PY) -m mu study $(STUDY_ARGS)

clean-reports:
	rm -rf reports/0* cache/logits
