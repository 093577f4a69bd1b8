# Two commands do all set-up on a fresh machine:
#   make demo   enroll and check real signatures with the bundled model
#   make test   run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := edge/demo

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[edge,train,dev]'
	touch $@

demo: $(VENV)/.installed
	@db=$$(mktemp -d)/demo.db; set -x; \
	$(BIN)/edge-verify --db $$db enroll alice $(DEMO)/alice_ref_*.jpg && \
	$(BIN)/edge-verify --db $$db check alice $(DEMO)/alice_genuine.jpg; \
	$(BIN)/edge-verify --db $$db check alice $(DEMO)/alice_forgery.jpg; \
	$(BIN)/edge-verify --db $$db check alice $(DEMO)/bob_genuine.jpg; \
	$(BIN)/edge-verify --db $$db identify $(DEMO)/alice_genuine.jpg; true

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/edge-verify bench $(if $(wildcard runs/koch/koch_head.keras),--baseline runs/koch)

clean:
	rm -rf $(VENV) .pytest_cache
