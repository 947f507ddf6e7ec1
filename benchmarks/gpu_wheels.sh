#!/usr/bin/env bash
# Prepare, on a machine with internet access, the wheels that benchmarks/gpu_check.sh installs
# on a bare CUDA machine that has Python 3.12 and PyTorch but no network.
#
#   benchmarks/gpu_wheels.sh [OUTDIR]        # default .whl (ignored by git)
#
# Only what the surface path needs beyond such a machine's image (see DEVICE_HAS in
# tests/core/test_gpu_check.py): the database (SQLAlchemy, Alembic), the store (Zarr), the
# workers (Dask, distributed, dask-cuda), and PyHessian (pure Python) for the curvature
# benchmark's GPU ratios. MLflow is not among them: the GPU check imports its
# models (`tracker import model`) instead of training them. CPython 3.12 manylinux x86-64
# wheels, without their dependencies (each one needed is named here), at the versions of this
# checkout's .venv so the GPU runs the code the tests ran; the folder stays under 60 MiB. The
# project itself runs from the checkout (gpu_check.sh puts it on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.whl}
VENV=${TRACKER_VENV:-.venv}
# The list, one distribution per line (tests/core/test_gpu_check.py reads it from here).
WHEELS=(
  sqlalchemy greenlet alembic mako
  zarr numcodecs donfig google-crc32c
  dask distributed tornado tblib zict locket partd
  dask-cuda rapids-dask-dependency importlib-metadata
  pyhessian
)
mkdir -p "$OUT"
rm -f "$OUT"/*.whl
for name in "${WHEELS[@]}"; do
  version=$("$VENV/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$OUT" "$name==$version"
done
size=$(du -sm "$OUT" | cut -f1)
echo "wheels in $OUT: $(ls "$OUT"/*.whl | wc -l) files, ${size} MiB"
if [ "$size" -ge 60 ]; then
  echo "the wheel folder is ${size} MiB: over the 60 MiB a device run may carry" >&2
  exit 1
fi
