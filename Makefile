# The two commands of the README's quick start: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(BIN)/lookalike --catalog demo-catalog demo

test:
	./scripts/setup.sh --tests
	$(BIN)/ruff check lookalike tests benchmarks
	$(BIN)/python -m pytest -rP  # -rP: the figures tests print (kills survived, load latencies, fuzz counts)

# The long variants (5-minute load, 20 kills, long fuzz); CI runs them after make test.
test-slow:
	./scripts/setup.sh --tests
	$(BIN)/python -m pytest -rP -m slow

bench: setup
	$(BIN)/python benchmarks/embed_bench.py
	$(BIN)/python benchmarks/query_bench.py
	$(BIN)/python benchmarks/quality_bench.py
	$(BIN)/python benchmarks/hnsw_choice.py
	$(BIN)/python benchmarks/http_load.py
	$(BIN)/python benchmarks/index_bench.py --n 100000
	$(BIN)/python benchmarks/milvus_bench.py
	$(BIN)/python benchmarks/ray_bench.py
	$(BIN)/python benchmarks/lots_bench.py
	$(BIN)/python benchmarks/verify_bench.py
	$(BIN)/python benchmarks/duplicates_bench.py
	$(BIN)/python benchmarks/price_bench.py

clean:
	rm -rf demo-catalog .pytest_cache
