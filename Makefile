# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ROWS   ?= 20000
DEMO   ?= demo

.PHONY: demo lab test lint lock clean flink-venv glue-venv

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv

$(STAMP): requirements.lock pyproject.toml $(VENV)/bin/uv
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	touch $@

## demo: generate sample data, then `mlprep run`: notebooks 01 batch ETL, 02 streaming features, 03 train and deploy,
## headless with papermill, into runs/<run-id>/ (executed notebooks, logs, summary.json, report.html)
demo: $(STAMP)
	@test -f $(DEMO)/data/transactions.jsonl || $(PY) -m mlprep data generate --out $(DEMO)/data --rows $(ROWS)
	$(PY) -m mlprep run --plan conf/run/demo.yaml --param data_dir=$(DEMO)/data

## lab: JupyterLab on notebooks/ with the project's environment as the kernel (127.0.0.1)
lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir notebooks --ServerApp.ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)

## test: the whole test suite, two workers, a file's tests on one worker (starts its own moto server; needs PostgreSQL and MariaDB up; Java 17 for Flink)
test: $(STAMP) .venv-flink/.installed .venv-glue/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check mlprep tests bench pipelines notebooks

## flink-venv: PyFlink in its own environment (apache-flink pins pandas 2.2 / pyarrow 16): the Flink
## parity tests and benchmarks drive it by subprocess
flink-venv: .venv-flink/.installed
.venv-flink/.installed: requirements-flink.lock $(VENV)/bin/uv
	$(PYTHON) -m venv .venv-flink
	$(VENV)/bin/uv pip install -q --python .venv-flink/bin/python -r requirements-flink.lock
	touch $@

## glue-venv: Spark 3.5 with pandas 2.2 as on AWS Glue 5.0, plus the mlprep wheel's requirements: the
## test that runs the planned Glue job's script and wheel there
glue-venv: .venv-glue/.installed
.venv-glue/.installed: requirements-glue.lock $(VENV)/bin/uv
	$(PYTHON) -m venv .venv-glue
	$(VENV)/bin/uv pip install -q --python .venv-glue/bin/python -r requirements-glue.lock
	touch $@

## lock: re-resolve requirements.lock from pyproject.toml
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 -o requirements.lock
	echo "apache-flink==2.3.*" | $(VENV)/bin/uv pip compile - --python-version 3.11 -o requirements-flink.lock
	$(VENV)/bin/uv pip compile conf/glue/requirements.in --python-version 3.11 -o requirements-glue.lock

clean:
	rm -rf $(VENV) .venv-flink .venv-glue runs $(DEMO)
