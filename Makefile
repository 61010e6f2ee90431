# Every target creates (or reuses) the project's own environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Jobs run with .venv/bin first on PATH, so what they call by name is the environment's own
# (SpeechBrain's env.log is `pip freeze`: otherwise the packages of whatever pip is on PATH).
RUN = PATH="$(abspath $(VENV))/bin:$$PATH" $(PY)

.PHONY: venv test demo pretrain bench lint clean constraints

# constraints.txt pins every package (Python 3.11) to the set the demo's figures were measured with.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.version_info[:2] == (3, 11) or print("note: $(PYTHON) is \
	Python %d.%d; constraints.txt pins packages for 3.11 (if the install fails: make \
	PYTHON=python3.11 ...)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

## make test: unit tests, doctests, recipe smoke tests (about 12 minutes on 2 idle cores of
## the faster hosts, more on slower ones, installing .venv included)
test: $(STAMP)
	$(RUN) -m pytest tests --doctest-modules multitask benchmarks

## make demo: synthetic corpus -> joint training -> evaluation -> export -> reload -> predict
demo: $(STAMP)
	$(RUN) recipes/demo.py hparams/demo.yaml

## make pretrain: remake hparams/encoders/demo_ssl, the self-supervised encoder the demo starts from
pretrain: $(STAMP)
	$(RUN) recipes/pretrain.py hparams/pretrain.yaml

## make bench: inference + training speed (about 5 minutes on 2 idle cores); JSON and
## README_table.md under results/bench/, the table copied into README.md
bench: $(STAMP)
	$(RUN) benchmarks/inference.py --out results/bench/inference.json
	$(RUN) benchmarks/train.py --out results/bench/train.json
	$(RUN) benchmarks/report.py --bench results/bench --readme README.md

## make constraints: re-pin constraints.txt to what .venv holds now, after a deliberate
## upgrade (e.g. .venv/bin/pip install -U transformers); then re-measure the README's figures.
## It does not reinstall first: that would put the old pins back before they are read.
constraints:
	@test -x $(PY) || { echo "no $(VENV): run 'make venv' first"; exit 1; }
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check multitask recipes tests benchmarks

clean:
	rm -rf results .pytest_cache
