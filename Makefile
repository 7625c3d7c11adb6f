# The two commands of the README: `make run` (RQFedRec against FedMF on ML-100k) and `make test`.
# Both create .venv when missing, install the pinned working set, fetch the data, then run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_STAMP := data/.fetched
DATA_1M_STAMP := data/.fetched-ml-1m
RESULTS ?= results/main
SEED ?= 0
ROUNDS ?= 300

.PHONY: install data run test benchmark clean-venv

$(STAMP): requirements.txt requirements-tff.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; tff-rqfed needs Python 3.11 (TensorFlow 2.14 and TFF 0.87 ship wheels for 3.9-3.11 only)"; exit 1; }
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else f"error: {sys.executable} is Python {v[0]}.{v[1]}; tff-rqfed needs Python 3.11 (TensorFlow 2.14 and TFF 0.87 ship wheels for 3.9-3.11 only, and the pins are tested on 3.11). Set PYTHON=/path/to/python3.11.")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# TFF 0.87 pins jaxlib==0.4.14, which the package index does not carry: install it without deps.
	$(PY) -m pip install --quiet --no-deps -r requirements-tff.txt
	touch $(STAMP)

install: $(STAMP)

$(DATA_STAMP): $(STAMP)
	$(PY) -m tff_rqfed.data.movielens ml-100k
	touch $(DATA_STAMP)

# ML-1M only for the tests (tests/data/test_movielens.py reads it); `make run` needs ML-100k only.
$(DATA_1M_STAMP): $(STAMP)
	$(PY) -m tff_rqfed.data.movielens ml-1m
	touch $(DATA_1M_STAMP)

data: $(DATA_STAMP)

# RQFedRec against FedMF and MostPop on ML-100k (paper protocol, 100 clients, d=512), then the table;
# learning rates and initialisation scales are the launcher's validated defaults.
run: $(DATA_STAMP)
	$(PY) -m launchers.simulate --algorithm=mostpop --seed=$(SEED) --output_dir=$(RESULTS)/mostpop
	$(PY) -m launchers.simulate --algorithm=fedmf --seed=$(SEED) --rounds=$(ROUNDS) --output_dir=$(RESULTS)/fedmf
	$(PY) -m launchers.simulate --algorithm=rqfedrec --seed=$(SEED) --rounds=$(ROUNDS) --output_dir=$(RESULTS)/rqfedrec
	$(PY) -m launchers.report $(RESULTS)

# Every dataset a test reads is fetched before pytest starts: the tests never download.
test: $(DATA_STAMP) $(DATA_1M_STAMP)
	$(PY) -m pytest -q tests

benchmark: $(DATA_STAMP)
	$(PY) -m benchmarks.round_speed
	$(PY) -m benchmarks.rq_kmeans_bench
	$(PY) -m benchmarks.codebook_span

clean-venv:
	rm -rf $(VENV)
