# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# torch is installed FIRST and pinned: an unpinned torch pulls the multi-GB CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow bench clean

# --no-cache-dir: the venv alone is ~2.1 GB; pip's wheel cache would hold a second copy of every
# download, and a CI machine once ran out of disk during this step.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir "$(TORCH)"
	$(PY) -m pip install --quiet --no-cache-dir -e '.[offline,test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/transmodal demo

# pytest exits 5 when no test is collected; that is not a failure of the code.
test: install
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 5 ] && { echo "no tests collected"; exit 0; }; exit $$rc

test-slow: install
	$(PY) -m pytest -q -p no:cacheprovider -m slow; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
