#!/usr/bin/env bash
# Every GPU check of lninspect in one run, for a session that is lent an accelerator:
#   PYTHONPATH=$PWD bash benchmarks/gpu.sh > gpu.log 2>&1     (all parts; about 8-9 minutes)
#   PYTHONPATH=$PWD bash benchmarks/gpu.sh exact overhead     (some parts, in this order)
# Parts:
#   exact       exactness on CUDA against the CPU and float64 (float32 and bfloat16), sync check;
#   overhead    capture against the bare model (and hooks that do nothing), bf16, 1024 tokens,
#               batch 1 and 16, gpt2 and gpt2-xl (random weights), compiled reductions;
#   eager       the same for gpt2 with the eager reductions, batch 1 and 16 (which should
#               `auto` pick at each: launch-bound or GPU-bound);
#   host        the host's time per phase of a run and per reductions call (host_cost.py);
#   throughput  corpus throughput of `stats --file`, bf16, 16 x 1024;
#   watch       a training step recorded by lninspect.watch against the bare one, gpt2
#               (random weights, float32) at 8 x 1024 tokens (compiled reductions, the default).
# docs/performance.md's GPU section is written from its output.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

exact() {
  echo "== exactness"
  $PY benchmarks/device_check.py --device cuda
}

overhead() {
  for model in random:gpt2 random:gpt2-xl; do
    for batch in 1 16; do
      echo "== overhead $model bf16 batch $batch"
      $PY benchmarks/overhead.py --model "$model" --device cuda --dtype bfloat16 \
          --batch-size "$batch" --repeats 7
    done
  done
}

eager() {
  for batch in 1 16; do
    echo "== overhead random:gpt2 bf16 batch $batch, eager reductions (the cost before fusing)"
    $PY benchmarks/overhead.py --model random:gpt2 --device cuda --dtype bfloat16 \
        --batch-size "$batch" --repeats 5 --reductions eager
  done
}

host() {
  echo "== host time per phase and per call, random:gpt2 bf16 batch 1 (what batch 1 waits on)"
  $PY benchmarks/host_cost.py --model random:gpt2 --device cuda --dtype bfloat16 \
      --tokens 1024 --repeats 20
}

throughput() {
  echo "== throughput"
  $PY benchmarks/throughput.py --device cuda --dtype bfloat16 --seq-len 1024 --batch-size 16 \
      --sequences 128 --repeats 3
}

watch() {
  echo "== watch: a recorded training step against its neighbours (no hook), random:gpt2"
  $PY benchmarks/watch.py --model random:gpt2 --device cuda --tokens 1024 --batch 8 --repeats 9
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(exact overhead eager host throughput watch)
for part in "${parts[@]}"; do
  case "$part" in
    exact | overhead | eager | host | throughput | watch) "$part" ;;
    *) echo "gpu.sh: unknown part '$part' (exact, overhead, eager, host, throughput, watch)" >&2; exit 2 ;;
  esac
done
