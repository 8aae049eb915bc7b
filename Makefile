# Two commands do all the set-up: `make run` (the pipeline on the default data) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test install data

run: install data
	$(BIN)/unseen run

test: install data
	$(BIN)/python -m pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Fashion-MNIST from Debian's package where apt and root are there; otherwise torchvision downloads it on first use.
data:
	@if [ ! -f $(FASHION) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist) || echo "apt failed: torchvision will download Fashion-MNIST"; \
	fi
