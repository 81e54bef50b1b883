#!/usr/bin/env bash
# Every GPU check of aedmae, in one script, for a machine with an NVIDIA GPU (run from the repo root):
#   bash benchmarks/gpu_check.sh            # results under $OUT (default benchmarks/gpu-results)
# 1. machine facts; 2. model-level CUDA speed (torch fp32/fp16/bf16 + CUDA graphs, CUDA-event timing)
# for the reference and the shipped model; 3. parity of torch CUDA (fp32, bf16) against ONNX Runtime on
# the golden clip; 4. TensorRT engine build + parity + timing, where TensorRT is installed;
# 5. the service end to end on the GPU (torch backend, CUDA streams per worker) and 6. the number of
# 25 fps cameras it scores in real time, where FastAPI is installed. A step whose requirements are missing says so and the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:-.}
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
# The whole script fits one device call (10 minutes at most, 15 minutes of device time a session, machine
# start included): each step gets its own limit, cut to what is left of BUDGET seconds (default 540).
BUDGET=${BUDGET:-540}
limit() {  # limit SECONDS -> the smaller of SECONDS and what is left of the budget (0 when none)
  local left=$((BUDGET - SECONDS)); [ "$left" -lt 0 ] && left=0
  echo $(( $1 < left ? $1 : left ))
}
step() {  # step SECONDS CMD...: run CMD under its limit, or say it was skipped for lack of time
  local t; t=$(limit "$1"); shift
  if [ "$t" -lt 20 ]; then log "skipped (budget spent): $*"; return 0; fi
  timeout "$t" "$@"
}

# The GPU image has torch, onnx, onnxruntime and OpenCV but not everything aedmae imports; a folder
# wheels/ carried along (11 MB) fills the gap; make it with:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d wheels safetensors tqdm \
#     fastapi "uvicorn[standard]" httpx pydantic-settings python-multipart prometheus-client
if [ -d wheels ]; then
  $PY -m pip install -q --no-index --find-links wheels safetensors tqdm fastapi uvicorn httpx pydantic-settings \
    python-multipart prometheus-client 2>&1 | tail -n 2
fi

log "machine $(date -u +%Y-%m-%dT%H:%M:%SZ)"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi not available"
$PY - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY

log "model-level CUDA speed (bench_model.py --cuda)"
step 150 $PY benchmarks/bench_model.py --cuda --cuda-batches 32 128 512 --repeats 5 \
  --json "$OUT/bench_model_cuda.json" 2>&1 | tee "$OUT/bench_model_cuda.txt" | tail -n 12

log "parity: torch CUDA (fp32, bf16) vs ONNX Runtime on the golden clip"
step 60 $PY - <<'PY' 2>&1 | tee "$OUT/parity.txt"
import json, tempfile, torch, numpy as np
from pathlib import Path
from export.bundle import compare_outputs, load_bundle, OUTPUT_NAMES
from export.onnx_export import run_onnxruntime
from model.shipped import SHIPPED_DIR
bundle = load_bundle(SHIPPED_DIR)
frames = bundle.golden_inputs()
ref = run_onnxruntime(bundle.graph, frames)
from export.onnx_export import DeployedGraph
from model import checkpoint
from model.evaluation import scorer_from_meta
net, meta = checkpoint.load(SHIPPED_DIR)
g = DeployedGraph(net, scorer_from_meta(net, meta)).eval().cuda()
out = {}
for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        got = dict(zip(OUTPUT_NAMES, (t.float().cpu().numpy() for t in g(torch.from_numpy(frames).cuda()))))
    out[name] = compare_outputs(got, ref, "fp32" if dtype is None else "fp16")
    print(name, json.dumps(out[name]))
PY

if $PY -c "import tensorrt" 2>/dev/null; then
  log "TensorRT engine: build, parity vs ONNX Runtime"
  step 150 $PY -m service.cli export tensorrt --onnx model/weights/ped2/model.onnx --out "$OUT/model.engine" \
    --min-batch 1 --opt-batch 32 --max-batch 256 2>&1 | tee "$OUT/tensorrt.txt" | tail -n 5
else
  log "TensorRT not installed here: engine build skipped (torch CUDA rows above stand in)"
fi

if $PY -c "import fastapi, uvicorn, httpx, pydantic_settings" 2>/dev/null; then
  log "service end to end on the GPU (torch backend, 2 workers on their own CUDA streams)"
  step 90 $PY benchmarks/bench_service.py --serve-args "--backend torch --device cuda --workers 2 \
    --max-batch-size 128" --clients 32 --seconds 20 --json "$OUT/bench_service_gpu.json" 2>&1 \
    | tee "$OUT/bench_service_gpu.txt" | tail -n 8
  log "cameras on the GPU: 25 fps file cameras (realtime) scored in real time (bench_streams.py)"
  step 120 $PY benchmarks/bench_streams.py --source file --fps 25 --max-cameras 64 --seconds 8 --warmup 3 \
    --serve-args "--backend torch --device cuda --workers 2 --max-batch-size 128" \
    --json "$OUT/bench_streams_gpu.json" 2>&1 | tee "$OUT/bench_streams_gpu.txt" | tail -n 6
else
  log "FastAPI/uvicorn not installed here: service and camera benchmarks skipped"
fi
log "done in ${SECONDS}s (budget ${BUDGET}s); results in $OUT"
