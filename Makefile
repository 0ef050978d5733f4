# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(PY) -m aniportraitgan demo --out outputs --resolution 64

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf outputs .pytest_cache
