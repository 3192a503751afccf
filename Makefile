# The two commands of README.md: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test bench bench-quick system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# tmux drives the real-terminal test, jq runs the seed document's curl | jq commands.
system-deps:
	@command -v tmux >/dev/null && command -v jq >/dev/null || { \
	  if command -v apt-get >/dev/null; then \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq tmux jq >/dev/null; \
	  elif command -v brew >/dev/null; then brew install tmux jq; \
	  else echo "please install tmux and jq" >&2; exit 1; fi; }

# The demo run keeps its settings outside the repository (your user config file; created on
# the first save), so the tracked settings.toml is never rewritten by the app.
RUN_SETTINGS ?= $${XDG_CONFIG_HOME:-$$HOME/.config}/mlx-tui/settings.toml
run: $(VENV)/.installed
	$(VENV)/bin/mlx-tui --model demo --settings "$(RUN_SETTINGS)"

test: $(VENV)/.installed system-deps
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed system-deps
	$(PY) -m benchmarks

bench-quick: $(VENV)/.installed system-deps
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) build *.egg-info
