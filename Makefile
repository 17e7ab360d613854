# Two entry points, each doing all set-up on a fresh machine:
#   make demo   create .venv, install histosynth, run the main job on the embedded sample
#   make test   create/update .venv, install histosynth with test extras, run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.histosynth-installed
# torch/torchvision first, pinned: the pair that lies on this machine's disk and imports together
# (see ARCHITECTURE.md, "Offline world"). pip compiles bytecode; this machine sets PYTHONDONTWRITEBYTECODE.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
PYTEST_ARGS ?=

.PHONY: demo test test-slow install clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/histosynth demo

# Default run: everything but `slow`. The hub tests (tests/hub) need HF_ENDPOINT set before huggingface_hub is
# imported and must not run offline, so they are their own pytest invocation against the local test Hub.
test: $(STAMP)
	$(OFFLINE) $(BIN)/pytest tests --ignore=tests/hub -m "not slow" $(PYTEST_ARGS)
	if [ -d tests/hub ]; then HISTOSYNTH_HUB_TESTS=1 $(BIN)/pytest tests/hub $(PYTEST_ARGS); fi

test-slow: $(STAMP)
	$(OFFLINE) $(BIN)/pytest tests --ignore=tests/hub -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info demo_output
