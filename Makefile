# The two set-up commands (README): `make run` and `make test`. Everything else is detail.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lanedesk-installed
NODE   := web/node_modules/.lanedesk-installed
ASSETS := web/dist/.lanedesk-built

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The workspace's front-end packages (htmx, bpmn-js, ...), exactly as web/package-lock.json says.
$(NODE): web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	touch $(NODE)

# The studio's BPMN editor: esbuild bundles web/studio/ into web/dist/ (gitignored), served by
# web/assets.py as /static/vendor/studio.{js,css}. Rebuilt when its source or the packages change.
$(ASSETS): $(NODE) $(wildcard web/studio/*)
	npm run build --prefix web --silent
	touch $(ASSETS)

run: $(STAMP) $(ASSETS)  ## migrate, deploy the bundled diagrams, demo data, then a Celery worker and beat (SQLite + embedded broker under ./var)
	$(VENV)/bin/lanedesk run

test: $(STAMP) $(ASSETS)  ## the whole suite (set LANEDESK_TEST_DATABASE_URL for PostgreSQL)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
