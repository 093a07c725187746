# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
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

.PHONY: .venv demo privacy test test-slow lint notebooks app clean distclean

# The virtualenv: torch first (pinned, or pip pulls a CUDA build), then the package in editable mode.
# The stamp file re-runs the install whenever pyproject.toml changes.
.venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) '$(TORCH)'
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

# The main job: the quickstart comparison on a demo subject, with the embedded tiny-face backbone.
demo: .venv
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 \
	$(BIN)/workbench run experiments/quickstart.yaml

privacy: .venv  ## the privacy-recipes comparison (DP-SGD LoRA, protected photos, leakage-aware options)
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 \
	$(BIN)/workbench run experiments/privacy_recipes.yaml

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
