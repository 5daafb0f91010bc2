# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ROWS   ?= 20000
DEMO   ?= demo

.PHONY: demo test lint lock clean flink-venv

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv

$(STAMP): requirements.lock pyproject.toml $(VENV)/bin/uv
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	touch $@

## demo: generate sample data and run the stage notebooks headless (papermill): 01 batch ETL, 02 streaming features, 03 train and deploy
demo: $(STAMP)
	@test -f $(DEMO)/data/transactions.jsonl || $(PY) -m mlprep data generate --out $(DEMO)/data --rows $(ROWS)
	@mkdir -p runs/demo
	$(PY) -m papermill --cwd notebooks notebooks/01_batch_etl.ipynb runs/demo/01_batch_etl.ipynb \
		-p config $(CURDIR)/conf/batch/transactions.yaml \
		-p data_dir $(CURDIR)/$(DEMO)/data -p out_dir $(CURDIR)/$(DEMO)/out --log-level WARNING
	$(PY) -m papermill --cwd notebooks notebooks/02_stream_features.ipynb runs/demo/02_stream_features.ipynb \
		-p spec $(CURDIR)/conf/features/transactions.yaml -p events $(CURDIR)/$(DEMO)/data/events.jsonl \
		-p out_dir $(CURDIR)/$(DEMO)/out/stream --log-level WARNING
	$(PY) -m papermill --cwd notebooks notebooks/03_train_deploy.ipynb runs/demo/03_train_deploy.ipynb \
		-p labels $(CURDIR)/$(DEMO)/data/labels.jsonl -p transactions $(CURDIR)/$(DEMO)/out/curated/transactions \
		-p features $(CURDIR)/$(DEMO)/out/stream/offline -p home $(CURDIR)/$(DEMO)/out/pipeline \
		-p definition $(CURDIR)/$(DEMO)/out/pipeline/mlprep-fraud.json -p keep_endpoint False --log-level WARNING
	@$(PY) -c "import json; s=json.load(open('$(DEMO)/out/stream/summary.json')); print('stream:', {k: s[k] for k in ('events', 'dead_letters', 'late', 'emitted', 'events_per_s')})"
	@$(PY) -c "import json; r=json.load(open('$(DEMO)/out/pipeline/result.json')); print('pipeline:', r['status'], {k: round(v, 4) for k, v in r['metrics'].items()}, r['model_package'])"
	@$(PY) -c "import json,glob,os; p=max(glob.glob('$(DEMO)/out/curated/_runs/transactions/*/summary.json'), key=os.path.getmtime); s=json.load(open(p)); print('batch rows:', s['rows']); print(os.path.abspath(p))"

## test: the whole test suite (starts its own moto server; needs PostgreSQL and MariaDB up)
test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check mlprep tests bench pipelines notebooks

## flink-venv: PyFlink in its own environment (apache-flink pins pandas 2.2 / pyarrow 16), for benchmarks
flink-venv: .venv-flink/.installed
.venv-flink/.installed:
	$(PYTHON) -m venv .venv-flink
	.venv-flink/bin/pip install -q --disable-pip-version-check uv
	.venv-flink/bin/uv pip install -q --python .venv-flink/bin/python "apache-flink==2.3.*"
	touch $@

## lock: re-resolve requirements.lock from pyproject.toml
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .venv-flink runs $(DEMO)
