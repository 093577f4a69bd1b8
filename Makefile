# Two commands do all set-up on a fresh machine:
#   make demo   enroll and check real signatures with the bundled model
#   make test   run the test suite in a device install and in the full one (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EDGE_VENV ?= .venv-edge
DEMO   := edge/demo
# setuptools' note on every editable install ("Editable installation ... folders with the same
# name as your package") is all an install would print besides pip's own errors.
QUIET_BUILD := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo test bench clean browser

$(VENV)/.installed: pyproject.toml
	@echo "installing edge-verify[edge,train,dev] into $(VENV) (TensorFlow included: minutes the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e '.[edge,train,dev]'
	@touch $@

# What a kiosk or a Pi installs: no TensorFlow.
$(EDGE_VENV)/.installed: pyproject.toml
	@echo "installing edge-verify[edge,dev] into $(EDGE_VENV) (a device install: no TensorFlow)"
	@test -x $(EDGE_VENV)/bin/python || $(PYTHON) -m venv $(EDGE_VENV)
	@$(EDGE_VENV)/bin/python -m pip install --quiet --upgrade pip
	@$(QUIET_BUILD) $(EDGE_VENV)/bin/python -m pip install --quiet -e '.[edge,dev]'
	@touch $@

# Each step is shown, then run; NO MATCH (exit 1) is an answer, an error (exit 2) stops the demo.
demo: $(VENV)/.installed
	@set -e; db=$$(mktemp -d)/demo.db; \
	step() { echo "\$$ $(BIN)/edge-verify --db $$db $$*"; $(BIN)/edge-verify --db $$db "$$@" || [ $$? -eq 1 ]; }; \
	step enroll alice $(DEMO)/alice_ref_*.jpg; \
	step check alice $(DEMO)/alice_genuine.jpg; \
	step check alice $(DEMO)/alice_forgery.jpg; \
	step check alice $(DEMO)/bob_genuine.jpg; \
	step identify $(DEMO)/alice_genuine.jpg; \
	echo; echo "The command line is $(BIN)/edge-verify ($(BIN)/edge-verify --help lists its commands)."

# The suite twice: in the device install (the tests that need TensorFlow are skipped), then in
# the full one.
test: $(VENV)/.installed $(EDGE_VENV)/.installed browser
	EDGE_VERIFY_SUITE=device $(EDGE_VENV)/bin/python -m pytest -q
	$(BIN)/python -m pytest -q

# The capture page's test drives Debian's Chromium through chromedriver (WebDriver). Installed here
# with apt-get as root (CI) or password-less sudo; elsewhere the test is skipped and says why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi; \
	  if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null; then \
	    echo "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver): the browser test will be skipped"; \
	  else \
	    echo "installing chromium and chromium-driver (apt-get) for the capture page's browser test"; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  fi; \
	fi

bench: $(VENV)/.installed
	$(BIN)/edge-verify bench $(if $(wildcard runs/koch/koch_head.keras),--baseline runs/koch)

clean:
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache
