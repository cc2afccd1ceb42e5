.PHONY: setup test demo lint dev clean docker-build e2e-docker lock

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/pytest

demo: setup
	bash scripts/demo.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

dev: setup
	.venv/bin/adp dev

# The images, in dependency order (BASE_IMAGE=debootstrap builds without an image registry).
docker-build:
	bash scripts/docker_build.sh

# The compose stack end to end: needs root (it installs Docker and may start dockerd).
e2e-docker: setup
	bash scripts/install_docker.sh
	.venv/bin/python scripts/e2e_docker.py

# Re-pin the images' Python packages after a dependency change in pyproject.toml.
lock:
	bash scripts/lock_requirements.sh

clean:
	rm -rf data .pytest_cache .ruff_cache .mypy_cache
