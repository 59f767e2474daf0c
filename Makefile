# Two commands for a fresh machine: `make up` runs everything, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test unit lint bench install clean-data schemas

$(BIN)/ledgerline: pyproject.toml
	@command -v java >/dev/null || { echo "Java 17+ is needed to run the Kafka broker (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch Kafka's jars once (apt-get install maven)"; exit 1; }
	@command -v npm >/dev/null || { echo "npm is needed to fetch GraphiQL's scripts once (apt-get install npm)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m query.graphiql >/dev/null  # GraphiQL's scripts and styles, served by the query API
	@touch $@

install: $(BIN)/ledgerline

## Run the whole system locally: Kafka, PostgreSQL, migrations, the four processes, demo data.
## SECURE=1: the secure profile (TLS, SASL/SCRAM and ACLs on Kafka; TLS and a role per process on PostgreSQL).
up: install
	$(BIN)/ledgerline up $(if $(SECURE),--secure)

PACKAGES := events common command processor projector query compliance ledgerline

## Lint, type-check, and run every test against a real Kafka broker and a real PostgreSQL.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)

## Commit the schema snapshot of every message version (refuses incompatible changes).
schemas: install
	$(BIN)/python -m events.schema

## Benchmarks print figures beside a baseline measured in the same run.
bench: install
	$(BIN)/python -m bench

## Forget the local stack's data (Kafka log, database); jars stay cached.
clean-data:
	rm -rf .ledgerline
