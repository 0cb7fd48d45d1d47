#!/bin/bash
# Second call on a lent H200: one-option-at-a-time variants of fit's defaults on the five suite
# UCR sets x 3 seeds (single fits, the transformer alone), after uncontended timings.
# Same set-up as run_h200.sh (the model's first byte range already in /tmp/w). Results (no weights)
# come back as $OUT/sweep.tgz, GPU load as $OUT/smi_sweep.csv.
set -u
B=.gpu/b
DEADLINE=$(( $(date +%s) + ${BUDGET:-480} ))   # every fit is stopped by then
if [ ! -f /tmp/minilm/model.safetensors ]; then
  mkdir -p /tmp/minilm && cp -r $B/model/. /tmp/minilm/
  cat /tmp/w/minilm.part1 $B/minilm.part2 > /tmp/minilm/model.safetensors
fi
echo "$(cat $B/minilm.sha256)  /tmp/minilm/model.safetensors" | sha256sum -c - || exit 3
[ -d /tmp/site/aeon ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $B/whl/*.whl || exit 4
export PYTHONPATH=$PWD/src:/tmp/site:$PWD/$B/site HF_HUB_OFFLINE=1 TRANSMODAL_CACHE=/tmp/tmcache
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm --format=csv,noheader -l 1 > $OUT/smi_sweep.csv 2>&1 &
SMI=$!
R=/tmp/sweep; mkdir -p $R
# 1. alone on the machine: bf16 vs fp32 train steps, and one default fit per set size
OMP_NUM_THREADS=4 timeout 60 python3 -m transmodal.cli bench precision --device cuda --repeats 15 --tokens 64 128 512 > $R/precision_b16.log 2>&1
OMP_NUM_THREADS=4 timeout 60 python3 -m transmodal.cli bench precision --device cuda --repeats 15 --batch-size 64 --tokens 64 128 512 > $R/precision_b64.log 2>&1
for set in GunPoint OSULeaf; do
  OMP_NUM_THREADS=4 timeout 90 python3 -m transmodal.cli bench defaults --sets $set --seeds 0 --out $R/alone_$set > $R/alone_$set.log 2>&1
done
# 2. the sweep: one process per (set, seed), the variants in priority order
VARIANTS=("tune=lora" "epochs=200" "augment=jitter,scaling,time-warp,window-slice" "max_tokens=128"
          "align=otdd" "precision=fp32" "augment=mixup" "batch_size=8" "head_lr=0.003"
          "embedder=overlap" "embedder=conv")
one() {  # SET SEED: every variant in turn until the deadline
  local set=$1 seed=$2 v tag left
  for v in "${VARIANTS[@]}"; do
    left=$(( DEADLINE - $(date +%s) )); [ $left -lt 20 ] && break
    tag=$(echo "$v" | tr '=,' '__')
    timeout $left python3 -m transmodal.cli bench defaults --sets $set --seeds $seed --fit $v \
      --out $R/$tag > $R/${tag}_${set}_$seed.log 2>&1
    echo "rc=$? end=$(date +%s)" >> $R/${tag}_${set}_$seed.log
  done
}
pids=()
for set in GunPoint ArrowHead ItalyPowerDemand BasicMotions OSULeaf; do
  for seed in 0 1 2; do one $set $seed & pids+=($!); done
done
wait "${pids[@]}"
kill $SMI
find $R -name "*.safetensors" -delete
tar czf $OUT/sweep.tgz --exclude='*.pt' --exclude='*.bin' --exclude='*.png' --exclude='*.html' --exclude='*.npz' --exclude='*.npy' -C $R .
ls -la $OUT
cat $R/precision_b16.log $R/precision_b64.log; tail -n 3 $R/alone_*.log
for d in $R/*/; do [ -f $d/results.jsonl ] && echo "$(basename $d) $(wc -l < $d/results.jsonl) fits"; done
