#!/bin/bash
# One call on a lent H200 (the device tool): fit's defaults and --method auto on the suite's UCR sets.
#
# The image has torch/transformers/accelerate/peft/scikit-learn/numba but not aeon nor the packaged
# MiniLM weights, and a call carries at most 64 MiB: the 91 MB model.safetensors travels as two
# byte ranges (the first copied to /tmp/w by a previous call on the same warm machine), joined here
# and checked against the sha256 taken on the development machine; aeon travels as a wheel.
# Results (no model weights) come back as $OUT/results.tgz; GPU load as $OUT/smi.csv.
set -u
JOB_LIMIT=${JOB_LIMIT:-480}
B=.gpu/b
mkdir -p /tmp/minilm && cp -r $B/model/. /tmp/minilm/
cat /tmp/w/minilm.part1 $B/minilm.part2 > /tmp/minilm/model.safetensors
echo "$(cat $B/minilm.sha256)  /tmp/minilm/model.safetensors" | sha256sum -c - || exit 3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $B/whl/*.whl || exit 4
export PYTHONPATH=$PWD/src:/tmp/site:$PWD/$B/site HF_HUB_OFFLINE=1 TRANSMODAL_CACHE=/tmp/tmcache
export OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, aeon, numba, numpy, sklearn; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0), 'transformers', transformers.__version__, 'aeon', aeon.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'sklearn', sklearn.__version__)" || exit 5
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm --format=csv,noheader -l 1 > $OUT/smi.csv 2>&1 &
SMI=$!
R=/tmp/res; mkdir -p $R
ALL=GunPoint,ArrowHead,ItalyPowerDemand,BasicMotions,OSULeaf
bench() {  # TAG ARGS...: one `bench defaults` process, its log and exit code under $R
  local tag=$1; shift
  timeout $JOB_LIMIT python3 -m transmodal.cli bench defaults "$@" --out $R/$tag > $R/$tag.log 2>&1
  echo "rc=$? end=$(date +%s)" >> $R/$tag.log
}
echo "start=$(date +%s)" > $R/start.txt
pids=()
for s in 0 1 2; do bench osu_auto_s$s --sets OSULeaf --seeds $s --fit method=auto & pids+=($!); done
for s in 0 1 2; do bench defaults_s$s --sets $ALL --seeds $s & pids+=($!); done
( timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_align_distances.py -k cuda > $R/pytest_cuda.log 2>&1
  echo "rc=$?" >> $R/pytest_cuda.log
  timeout 240 python3 -m transmodal.cli bench precision --device cuda --repeats 15 > $R/precision.log 2>&1
  echo "rc=$?" >> $R/precision.log ) & pids+=($!)
wait "${pids[@]}"
kill $SMI
tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' -C $R .
ls -la $OUT
tail -n 4 $R/*.log
