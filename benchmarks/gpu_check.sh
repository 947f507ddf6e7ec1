#!/usr/bin/env bash
# The prepared GPU check (issue 17): on a bare CUDA machine with Python 3.12 and PyTorch but no
# network, install the wheels benchmarks/gpu_wheels.sh prepared, then run the GPU tests
# (`pytest -m gpu`), the GPU cases of benchmarks/surface.py (g1-g3) and benchmarks/curvature.py
# on the GPU at the issue's sizes (issue 15: >= 3x PyHessian). Writes OUTDIR/gpu.json (the
# surface figures), OUTDIR/gpu_tests.txt (the tests' summary), OUTDIR/curvature.txt (the
# curvature table) and OUTDIR/gpu_check.log (everything). Sized to finish within 10 minutes on
# one H100/H200-class GPU.
#
#   benchmarks/gpu_check.sh OUTDIR [WHEELDIR]      # WHEELDIR defaults to .whl
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: benchmarks/gpu_check.sh OUTDIR [WHEELDIR]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
OUT=$1
WHL=${2:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
SITE=$(mktemp -d /tmp/tracker-site.XXXX)
echo "== $(date -u +%FT%TZ) installing $(ls "$WHL"/*.whl 2>/dev/null | wc -l) wheels from $WHL"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHL"/*.whl \
  || { echo "could not install the wheels in $WHL: run benchmarks/gpu_wheels.sh first"; exit 1; }
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

rc=0
echo "== $(date -u +%FT%TZ) GPU tests"
timeout 240 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider -o addopts="" -rA -s \
  --timeout 200 2>&1 | tee "$OUT/gpu_tests.txt" | tail -n 60
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1

echo "== $(date -u +%FT%TZ) GPU cases of benchmarks/surface.py"
timeout 330 "$PY" benchmarks/surface.py --gpu-cases --json "$OUT/gpu.json" || rc=1
echo "== $(date -u +%FT%TZ) benchmarks/curvature.py on the GPU (ResNet-20 on 512 samples, digits)"
timeout 180 "$PY" benchmarks/curvature.py --device cuda --full --cases resnet20,digits \
  --no-resnet56 2>&1 | tee "$OUT/curvature.txt" | tail -n 30
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
echo "== $(date -u +%FT%TZ) done (status $rc)"
exit $rc
