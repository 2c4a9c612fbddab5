# kcnn: the two commands of README.md are `make train` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
KCNN := $(VENV)/bin/kcnn
CONFIG ?= configs/default.yaml
RUN ?=
PYTEST_ARGS ?=

.PHONY: setup train train-segment train-fashion test lint evaluate export analyze help

help:
	@echo "make train          train the default experiment ($(CONFIG)), evaluate, plot, export"
	@echo "make test           run the test suite"
	@echo "make train-fashion  the Fashion-MNIST experiment that reaches >= 93% test accuracy"
	@echo "make train-segment  U-Net segmentation of the built-in shapes scenes"
	@echo "make evaluate RUN=runs/<name>   make export RUN=runs/<name>   make analyze CONFIG=..."
	@echo "make lint           ruff check and format check"

setup:
	@bash scripts/setup_env.sh

train: setup
	$(KCNN) train $(CONFIG)

train-segment: setup
	$(KCNN) train configs/segment_unet.yaml

train-fashion: setup
	$(KCNN) train configs/fashion_mnist.yaml

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

evaluate: setup
	@test -n "$(RUN)" || (echo "usage: make evaluate RUN=runs/<name>" && exit 2)
	$(KCNN) evaluate $(RUN)

export: setup
	@test -n "$(RUN)" || (echo "usage: make export RUN=runs/<name>" && exit 2)
	$(KCNN) export $(RUN)

analyze: setup
	$(KCNN) analyze $(CONFIG)
