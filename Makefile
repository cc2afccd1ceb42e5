.PHONY: setup test demo lint dev clean

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest

demo: setup
	bash scripts/demo.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

dev: setup
	.venv/bin/adp dev

clean:
	rm -rf data .pytest_cache .ruff_cache
