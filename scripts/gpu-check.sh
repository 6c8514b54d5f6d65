#!/usr/bin/env bash
# The GPU tier's check in one go, for a machine with an NVIDIA GPU (README: "GPU tier"):
#   1. the GPU, ONNX Runtime's version and the providers it offers;
#   2. `live bench show_configs/gpu.toml --only gpu` twice: the first builds TensorRT's engine cache (minutes),
#      the second loads it (seconds); each: provider really used, fps, p50/p99 frame time at 1280x720 through the
#      IOBinding frame path, host copies per frame;
#   3. tests/test_gpu_tier.py, whose GPU test compares the fp16 model on the GPU with fp32 on the CPU.
# Writes $OUT (default /tmp/live-gpu-check): bench-1.json, bench-2.json, their text, pytest.txt.
# Exit status: 0 when the goal (>= 60 fps, p99 <= 16.7 ms, on a GPU provider) is met, 2 when not, 1 on failure.
# PY picks the interpreter (default .venv/bin/python, else python3); SECONDS_PER_RUN the bench time (default 10).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-/tmp/live-gpu-check}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
  echo "nvidia-smi: no NVIDIA driver here"
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, 'offers', *o.get_available_providers())" || {
  echo "gpu-check: $PY cannot import onnxruntime (fix: make test sets up .venv, or PY=a python with onnxruntime-gpu)"
  exit 1; }
for run in 1 2; do
  echo "--- bench run $run ($([ $run = 1 ] && echo 'builds or loads the engine cache' || echo 'engine cache warm'))"
  "$PY" -m live bench show_configs/gpu.toml --only gpu --seconds "$SECONDS_PER_RUN" --json "$OUT/bench-$run.json" \
    2>&1 | tee "$OUT/bench-$run.txt" || { echo "gpu-check: bench run $run failed (see $OUT/bench-$run.txt)"; exit 1; }
done
echo "--- TensorRT engine cache: ${XDG_CACHE_HOME:-$HOME/.cache}/live/tensorrt"
ls -la "${XDG_CACHE_HOME:-$HOME/.cache}/live/tensorrt" 2>/dev/null || echo "(none: TensorRT did not run)"
echo "--- tests/test_gpu_tier.py"
"$PY" -m pytest -q -rs tests/test_gpu_tier.py 2>&1 | tee "$OUT/pytest.txt" | tail -5
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
first, warm = (json.loads((out / f"bench-{i}.json").read_text())["gpu"] for i in (1, 2))
print(f"--- summary: {warm['model']} at {warm['size'][0]}x{warm['size'][1]} on {warm['provider']}"
      + (f" ({warm['fallback']})" if warm["fallback"] else ""))
print(f"fps {warm['fps']}, frame time p50 {warm['frame_ms']['p50']} ms, p99 {warm['frame_ms']['p99']} ms, "
      f"{warm['host_copies_per_frame']} host copies per frame (plain Session.run: {warm['plain_run_fps']} fps); "
      f"open + first frame {first['open_and_first_frame_s']} s cold, {warm['open_and_first_frame_s']} s cached")
met = warm["goal_met"] and warm["provider"] != "cpu"
print("goal (>= 60 fps, p99 <= 16.7 ms on a GPU):", "MET" if met else "NOT MET")
sys.exit(0 if met else 2)
PYEOF
