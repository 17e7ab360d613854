# Two entry points, each doing all set-up on a fresh machine:
#   make demo   create .venv, install histosynth, run the main job on the embedded sample
#   make test   create/update .venv, install histosynth with test extras, run the tests and the lint
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.histosynth-installed
# torch/torchvision first, pinned: the pair that lies on this machine's disk and imports together
# (see ARCHITECTURE.md, "Offline world"). pip compiles bytecode; this machine sets PYTHONDONTWRITEBYTECODE.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
PYTEST_ARGS ?=

# The numeric tests: rerun by `test-threads` under one BLAS thread count other than the machine's default, since
# OpenBLAS's blocking (and so its rounding) changes with the thread count.
METRIC_TESTS := $(addprefix tests/unit/,test_frechet.py test_stats.py test_kid_prdc.py test_features.py \
	test_fid_vs_torch_fidelity.py test_memorization.py test_lpips_masked.py test_encoders.py test_encoder_weights.py)

.PHONY: demo test test-slow test-threads lint install clean browser-deps sandbox-deps leaderboard

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
# Every part runs even if an earlier one failed, so all failures show at once; the target fails at the end.
test: $(STAMP) sandbox-deps
	@status=0; \
	$(OFFLINE) $(BIN)/pytest tests --ignore=tests/hub -m "not slow" $(PYTEST_ARGS) || status=1; \
	if [ -d tests/hub ]; then HISTOSYNTH_HUB_TESTS=1 $(BIN)/pytest tests/hub $(PYTEST_ARGS) || status=1; fi; \
	$(MAKE) --no-print-directory lint || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: some part of the suite failed (see above)"; fi; \
	exit $$status

# ruff (pyflakes, import order, bugbear) and the layer contracts of pyproject.toml (tools/lint_imports.py)
lint: $(STAMP)
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/python tools/lint_imports.py || status=1; \
	exit $$status

# Debian's chromium for tests/browser (Playwright drives it; Playwright's own browser download cannot work offline).
# Installed where apt-get is available and we are root (CI); elsewhere the browser tests skip, saying so.
browser-deps:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" -eq 0 ] && \
		apt-get update -qq && apt-get install -y -qq chromium; } || \
		echo "chromium not installed (needs apt-get as root): the browser tests will be skipped"

# bubblewrap for the submission sandbox (leaderboard/sandbox, docs/sandbox.md): scoring refuses to run without it and
# its tests fail rather than skip. Installed where apt-get is available and we are root (CI); elsewhere it says how.
sandbox-deps:
	@command -v bwrap >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" -eq 0 ] && \
		apt-get update -qq && apt-get install -y -qq bubblewrap; } || \
		echo "bubblewrap not installed (needs apt-get as root): install it (sudo apt-get install bubblewrap) or the sandbox tests fail"

test-slow: $(STAMP) sandbox-deps
	$(OFFLINE) $(BIN)/pytest tests --ignore=tests/hub -m slow $(PYTEST_ARGS)

test-threads: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(OFFLINE) $(BIN)/pytest $(METRIC_TESTS) -m "not slow" $(PYTEST_ARGS)

# The committed leaderboard (results/, docs/leaderboard/index.html): every generator trained as far as its learning
# curve goes. Both learning-curve recipes at demo scale, one thread each side by side (~20 h on 2 cores; a rerun
# reuses every finished step and snapshot, an interrupted one resumes), then the rows they collect (each curve's last
# snapshot, the reference rows) copied to results/, each recipe's figure to docs/learning_curves_<dataset>.png, and
# the page rebuilt. LEADERBOARD_RECIPES=leaderboard fills it
# from recipes/leaderboard-*.yaml instead: every generator at an equal small budget (~45 min).
LEADERBOARD_TITLE := histosynth-bench v1 (demo variant, 2-core CPU)
LEADERBOARD_RECIPES := learning-curves
leaderboard: $(STAMP)
	@mkdir -p runs; status=0; \
	for d in simulator embedded; do \
		OMP_NUM_THREADS=1 $(OFFLINE) $(BIN)/histosynth recipe run recipes/$(LEADERBOARD_RECIPES)-$$d.yaml --scale demo \
			>> runs/$(LEADERBOARD_RECIPES)-$$d-demo.log 2>&1 & pids="$$pids $$!"; \
	done; \
	for pid in $$pids; do wait $$pid || status=1; done; \
	if [ $$status -ne 0 ]; then echo "a leaderboard recipe failed: see runs/$(LEADERBOARD_RECIPES)-*-demo.log"; exit 1; fi
	rm -rf results.partial && mkdir results.partial
	for d in simulator embedded; do \
		mkdir results.partial/$$d && cp -r runs/$(LEADERBOARD_RECIPES)-$$d-demo/results/. results.partial/$$d/ && \
		cp runs/$(LEADERBOARD_RECIPES)-$$d-demo/report.md results.partial/$$d/recipe-report.md; \
	done
	rm -rf results && mv results.partial results
	for d in simulator embedded; do \
		figure=runs/$(LEADERBOARD_RECIPES)-$$d-demo/figures/$$d/learning_curves.png; \
		if [ -f $$figure ]; then cp $$figure docs/learning_curves_$$d.png; fi; \
	done
	$(OFFLINE) $(BIN)/histosynth leaderboard build --results results --out docs/leaderboard --title "$(LEADERBOARD_TITLE)"

clean:
	rm -rf $(VENV) build *.egg-info demo_output
