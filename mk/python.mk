# Python binding (python/): a virtual environment under build/, the abi3 wheel built
# by maturin and installed into it, then pytest (tests/python) and the stub checks,
# the demo (examples/python) or the H5 benchmark (python/bench).

PYTHON ?= python3
PY_VENV := build/python-venv
PY_BIN := $(PY_VENV)/bin
PY_WHEELS := build/python-wheels
BENCH_PYTHON_ARGS ?=

TEST_TARGETS += test-python
DEMO_TARGETS += demo-python
BENCH_TARGETS += bench-python

.PHONY: python-venv python-wheel test-python demo-python bench-python

# Debian splits venv support out of the interpreter: install it when it is missing.
$(PY_BIN)/maturin:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c "import ensurepip" 2>/dev/null \
	  || { command -v apt-get >/dev/null && apt-get update -q && apt-get install -y -q python3-venv; }
	rm -rf $(PY_VENV)
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_BIN)/pip install -q --upgrade pip
	$(PY_BIN)/pip install -q "maturin>=1.9,<2" "pytest>=7" "mypy==2.4.1"

python-venv: $(PY_BIN)/maturin

python-wheel: python-venv
	rm -f $(PY_WHEELS)/conveyor-*.whl
	cd python && ../$(PY_BIN)/maturin build --release --quiet --interpreter ../$(PY_BIN)/python -o ../$(PY_WHEELS)
	$(PY_BIN)/pip install -q --force-reinstall --no-deps $(PY_WHEELS)/conveyor-*.whl

# The stubs must match the native module, and the package, the demo and the
# benchmark must type-check strictly against them.
test-python: python-wheel
	$(PY_BIN)/python -m pytest -q -p no:cacheprovider tests/python
	MYPY_CACHE_DIR=build/mypy-cache $(PY_BIN)/python -m mypy.stubtest conveyor._conveyor
	MYPY_CACHE_DIR=build/mypy-cache $(PY_BIN)/python -m mypy --strict -p conveyor
	MYPY_CACHE_DIR=build/mypy-cache $(PY_BIN)/python -m mypy --strict examples/python/demo.py \
	  examples/python/fanout.py python/bench/bench_python.py

demo-python: python-wheel
	$(PY_BIN)/python examples/python/demo.py
	$(PY_BIN)/python examples/python/fanout.py

bench-python: python-wheel
	$(PY_BIN)/python python/bench/bench_python.py $(BENCH_PYTHON_ARGS)
