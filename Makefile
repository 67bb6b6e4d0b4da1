# The common paths, one command each. A virtualenv is made and the project installed on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint fuzz bench bench-summary eval schema models messages reset vendor clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The code runs from this folder (run.py, python -m pytest): only the dependencies stay installed.
	# A plain wheel build warns about nothing; an editable install always prints setuptools' notices.
	$(PY) -m pip install --quiet '.[dev,bench]'
	$(PY) -m pip uninstall --quiet --yes dispatch-gateway
	touch $(STAMP)

run: $(STAMP)  ## the gateway on ws://127.0.0.1:8080/ws, embedded PostgreSQL and Redis under ./var
	$(PY) run.py serve

test: $(STAMP) lint  ## lint, then the whole test suite against real servers
	$(PY) -m pytest

fuzz: $(STAMP)  ## the hostile-frame fuzz test with 400 examples per operation (make test runs 12)
	FUZZ_EXAMPLES=400 $(PY) -m pytest tests/test_fuzz.py -k hostile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)  ## every benchmark against its same-run baselines, each into its section of docs/benchmarks.md
	$(PY) -m bench.gateway --markdown docs/benchmarks.md
	$(PY) -m bench.orders --markdown docs/benchmarks.md
	$(PY) -m bench.openloop --markdown docs/benchmarks.md
	$(PY) -m bench.ingest --markdown docs/benchmarks.md
	$(PY) -m bench.chat --markdown docs/benchmarks.md
	$(PY) -m bench.fanout --markdown docs/benchmarks.md --plot docs/img/fanout.png
	$(PY) -m bench.summary --markdown docs/benchmarks.md
	$(PY) -m bench.presence --markdown docs/benchmarks.md
	$(PY) -m bench.ai --markdown docs/benchmarks.md
	$(PY) -m bench.soak --markdown docs/benchmarks.md
	$(PY) -m bench.storm --markdown docs/benchmarks.md

bench-summary: $(STAMP)  ## admin.summary on a million seeded orders against the same SQL over asyncpg
	$(PY) -m bench.summary --markdown docs/benchmarks.md

eval: $(STAMP)  ## the AI troubleshooter's golden set against the configured engine (OPENAI_*), as a score table
	$(PY) -m bench.ai_eval

schema: $(STAMP)  ## regenerate docs/asyncapi.yaml from the protocol types
	$(PY) run.py schema

CODEGEN := .cache/codegen
models:  ## typed models from docs/asyncapi.yaml: build/models/models.ts (Modelina), models.dart (quicktype)
	mkdir -p $(CODEGEN)
	cmp -s tests/codegen/package-lock.json $(CODEGEN)/installed.lock || (cp tests/codegen/package.json \
		tests/codegen/package-lock.json $(CODEGEN)/ && cd $(CODEGEN) && npm ci --no-audit --no-fund --loglevel=error \
		&& cp package-lock.json installed.lock)
	cp tests/codegen/generate.mjs $(CODEGEN)/
	node $(CODEGEN)/generate.mjs docs/asyncapi.yaml build/models >/dev/null
	@echo "wrote build/models/models.ts and build/models/models.dart"

messages: $(STAMP)  ## re-extract translatable strings and merge them into the catalogs
	$(VENV)/bin/pybabel extract -F babel.cfg -k N_ --no-location --omit-header -o handlers/locales/messages.pot gateway handlers storage protocol
	$(VENV)/bin/pybabel update -i handlers/locales/messages.pot -d handlers/locales -D messages

reset: $(STAMP)  ## wipe the embedded data (DATA_DIR, ./var) after a confirmation; KEY_DIR stays
	$(PY) run.py reset

vendor: $(STAMP)  ## re-fetch the back office's browser libraries (pinned, sha512-checked) into gateway/webui/vendor
	$(PY) -m gateway.vendoring

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
