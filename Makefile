# The two commands of the README: `make repro` (the whole pipeline on mini-CLEVR) and `make test`.
.PHONY: setup repro test test-quick lint

setup:
	bash scripts/setup.sh

repro:
	SNMN_SKIP_BROWSER=1 bash scripts/setup.sh
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro

test: setup
	bash scripts/test.sh

test-quick: setup
	.venv/bin/python -m pytest -q -m "not slow and not ray" tests

lint: setup
	.venv/bin/ruff check snmn pipeline stages tests benchmarks
