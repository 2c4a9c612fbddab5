# kcnn: the two commands of README.md are `make train` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
KCNN := $(VENV)/bin/kcnn
CONFIG ?= configs/default.yaml
RUN ?=
TUNE_CONFIG ?= configs/tune_fashion.yaml
# make tune WORKERS=2: local worker processes on one study.
WORKERS ?= 1
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# make transfer-demo: labelled digits per class, and seeds (each a transfer and a scratch run).
PER_CLASS ?= 3
SEEDS ?= 0
PRETRAINED := runs/transfer_pretrain/model.keras

.PHONY: setup train train-segment train-inpaint train-inpaint-fashion train-detect train-detect-faster-rcnn train-instance-mask-rcnn train-localize train-fashion tune transfer-demo notebooks notebook-pictures test lint evaluate export analyze help

help:
	@echo "make train          train the default experiment ($(CONFIG)), evaluate, plot, export"
	@echo "make test           run the test suite"
	@echo "make notebooks      run every notebook (KCNN_NOTEBOOK_SMALL=1: the minute-long versions)"
	@echo "make train-fashion  the Fashion-MNIST experiment that reaches 94% test accuracy"
	@echo "make train-segment  U-Net segmentation of the built-in shapes scenes"
	@echo "make train-inpaint  partial-convolution U-Net inpainting of held-out photo crops"
	@echo "make train-inpaint-fashion   a U-Net refining a biharmonic fill: Fashion-MNIST, 30-60% holes"
	@echo "make train-detect   anchor-free detector on the built-in shapes scenes, COCO mAP"
	@echo "make train-detect-faster-rcnn   two-stage Faster R-CNN on the same scenes"
	@echo "make train-instance-mask-rcnn   Mask R-CNN: boxes and instance masks on the same scenes"
	@echo "make train-localize class + box of Fashion-MNIST items placed at random on a canvas"
	@echo "make tune           architecture search ($(TUNE_CONFIG)): Pareto front of accuracy vs MACs"
	@echo "make transfer-demo  Fashion-MNIST features on a few digits, against training from scratch"
	@echo "make evaluate RUN=runs/<name>   make export RUN=runs/<name>   make analyze CONFIG=..."
	@echo "make lint           ruff check and format check"

setup:
	@bash scripts/setup_env.sh

train: setup
	$(KCNN) train $(CONFIG)

train-segment: setup
	$(KCNN) train configs/segment_unet.yaml

train-inpaint: setup
	$(KCNN) train configs/inpaint_pconv.yaml

train-inpaint-fashion: setup
	$(KCNN) train configs/inpaint_fashion.yaml

train-detect: setup
	$(KCNN) train configs/detect_shapes.yaml

train-detect-faster-rcnn: setup
	$(KCNN) train configs/detect_shapes_faster_rcnn.yaml

train-instance-mask-rcnn: setup
	$(KCNN) train configs/instance_shapes_mask_rcnn.yaml

train-localize: setup
	$(KCNN) train configs/localize_fashion.yaml

train-fashion: setup
	$(KCNN) train configs/fashion_mnist.yaml

tune: setup
	$(KCNN) tune $(TUNE_CONFIG) --workers $(WORKERS)

# Pretrains once (skipped while $(PRETRAINED) exists), then trains each subset size and seed twice:
# from the pretrained weights, and from scratch with everything else equal.
transfer-demo: setup $(PRETRAINED)
	@for n in $(PER_CLASS); do for seed in $(SEEDS); do \
	  $(KCNN) train configs/transfer_digits.yaml -o data.train_per_class=$$n \
	    -o runtime.seed=$$seed -o name=transfer_digits_$${n}_seed$$seed || exit 1; \
	  $(KCNN) train configs/transfer_digits.yaml -o data.train_per_class=$$n \
	    -o runtime.seed=$$seed -o name=digits_scratch_$${n}_seed$$seed \
	    -o model.pretrained=null -o model.freeze=null || exit 1; \
	done; done

$(PRETRAINED):
	$(KCNN) train configs/transfer_pretrain.yaml

# Executes every notebook top to bottom; outputs are not written back (git keeps them stripped).
notebooks: setup
	$(VENV)/bin/jupyter-execute --timeout=3600 --kernel_name=python3 notebooks/*.ipynb

# Executes the notebooks and saves each one's README picture to docs/notebooks/.
notebook-pictures: setup
	$(PYTHON) scripts/notebook_pictures.py

# Prints the wall time of the whole command (set-up included) last, whether the tests pass or not.
# TEST_WORKERS pytest-xdist processes share the tests file by file (a file's module fixtures
# are built once); most tests keep one core busy, so 2 workers on 2 cores nearly halve the time.
test:
	@start=$$(date +%s); \
	bash scripts/setup_env.sh && $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); \
	status=$$?; \
	elapsed=$$(( $$(date +%s) - start )); \
	echo "make test: $$((elapsed / 60)) min $$((elapsed % 60)) s in all (set-up and tests), exit status $$status"; \
	exit $$status

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

evaluate: setup
	@test -n "$(RUN)" || (echo "usage: make evaluate RUN=runs/<name>" && exit 2)
	$(KCNN) evaluate $(RUN)

export: setup
	@test -n "$(RUN)" || (echo "usage: make export RUN=runs/<name>" && exit 2)
	$(KCNN) export $(RUN) $(if $(QUANTIZATION),--quantization $(QUANTIZATION))

analyze: setup
	$(KCNN) analyze $(CONFIG)
