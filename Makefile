# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# Every package of .[dev] pinned (constraints: what the tests passed with); `make lock` regenerates it.
LOCK := requirements.lock
UV := $(BIN)/uv
# Extra pip arguments for torch only. Here pip's configured find-links hold the CPU wheel; elsewhere,
# to avoid the multi-GB CUDA build: make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?= -q
# Tests and CI: one quiet thread policy, no network, nothing written outside a temp WORKBENCH_HOME.
TEST_ENV = OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
	GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 WANDB_MODE=offline \
	WORKBENCH_HOME="$$home" WANDB_DIR="$$home/wandb" WANDB_CACHE_DIR="$$home/wandb-cache" \
	WANDB_DATA_DIR="$$home/wandb-data" WANDB_CONFIG_DIR="$$home/wandb-config" \
	WANDB_ARTIFACT_DIR="$$home/wandb-artifacts" GRADIO_TEMP_DIR="$$home/gradio" \
	MPLCONFIGDIR="$$home/matplotlib" IPYTHONDIR="$$home/ipython" JUPYTER_RUNTIME_DIR="$$home/jupyter-runtime"

.PHONY: .venv lock demo privacy cohort test test-slow lint notebooks app clean distclean

# The virtualenv: torch first (pinned, or pip pulls a CUDA build), then uv (pinned by the lock), then the
# package in editable mode with every dependency at its locked version. uv keeps the installed torch
# (the lock says torch==2.13.0, which the CPU build 2.13.0+cpu satisfies) and reads only PyPI, not pip's
# configuration: behind a mirror, export UV_DEFAULT_INDEX=<its simple/ URL>.
# The stamp file re-runs the install whenever pyproject.toml or the lock changes.
.venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) '$(TORCH)'
	$(BIN)/python -m pip install -c $(LOCK) uv
	$(UV) pip install --python $(BIN)/python -c $(LOCK) -e '.[dev]'
	touch $@

# Regenerate the lock from pyproject.toml (CPython and platform of .venv: 3.11 on Linux x86_64 here and
# in CI). Pins already in the lock are kept; only added or removed dependencies change. To move pins:
#   make lock LOCK_ARGS=--upgrade                    (everything to the newest release in its range)
#   make lock LOCK_ARGS="--upgrade-package gradio"   (one package)
# then `make test` (the stamp reinstalls from the new lock) and commit the lock with pyproject.toml.
LOCK_ARGS ?=
lock: | $(BIN)/python
	$(BIN)/python -m pip install -q $(if $(wildcard $(LOCK)),-c $(LOCK)) uv
	[ ! -f $(LOCK) ] || cp $(LOCK) $(LOCK).tmp
	echo '$(TORCH)' | $(UV) pip compile pyproject.toml - --extra dev --python $(BIN)/python --quiet \
	  --custom-compile-command 'make lock' $(LOCK_ARGS) -o $(LOCK).tmp
	{ printf '%s\n' $(LOCK_HEADER); cat $(LOCK).tmp; } > $(LOCK).new
	cmp -s $(LOCK).new $(LOCK) || mv $(LOCK).new $(LOCK)  # unchanged: no reinstall on the next make
	rm -f $(LOCK).tmp $(LOCK).new
LOCK_HEADER = \
	'\# The lock: every dependency of .[dev], pinned at the versions `make test` passed with. `make` installs' \
	'\# it as constraints: pip install torch==2.13.0, then uv pip install -c requirements.lock -e .[dev].' \
	'\# Resolved for CPython 3.11 on Linux x86_64 (CI, the Space, environment.yml). The CUDA' \
	'\# libraries of torch (nvidia-*, cuda-*, triton) are pinned for GPU machines; its CPU build needs none.' \
	'\# Regenerate (keeps existing pins): make lock   Upgrade: make lock LOCK_ARGS=--upgrade  (see Makefile)' \
	'\# requirements.txt and environment.yml pin the same versions (tests/test_packaging.py checks).'

# The main job: the quickstart comparison on a demo subject, with the embedded tiny-face backbone.
demo: .venv
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 \
	$(BIN)/workbench run experiments/quickstart.yaml

privacy: .venv  ## the privacy-recipes comparison (DP-SGD LoRA, protected photos, leakage-aware options)
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 \
	$(BIN)/workbench run experiments/privacy_recipes.yaml

cohort: .venv  ## the cohort: none, LoRA and DreamBooth for 8 LFW people, membership pooled over people
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 \
	$(BIN)/workbench run experiments/cohort.yaml

test: .venv
	$(BIN)/ruff check .
	home=$$(mktemp -d) && trap 'rm -rf "$$home"' EXIT && \
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: .venv
	home=$$(mktemp -d) && trap 'rm -rf "$$home"' EXIT && \
	$(TEST_ENV) $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: .venv
	$(BIN)/ruff check .

# JupyterLab on the notebooks, local only, with its news feed and update check off (closed network).
notebooks: .venv
	$(BIN)/jupyter lab notebooks/ --ServerApp.ip=127.0.0.1 --no-browser --LabApp.news_url=None \
	--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(if $(filter 0,$(shell id -u)),--allow-root)

# The Gradio app on http://127.0.0.1:7860 (loopback only; APP_ARGS="--auth user:pass" for a login).
APP_ARGS ?=
app: .venv
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 \
	$(BIN)/python -m workbench.app $(APP_ARGS)

# Build and test leftovers; `distclean` also removes the virtualenv.
clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
