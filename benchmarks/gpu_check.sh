#!/usr/bin/env bash
# One command for a GPU machine: what is there, then vgrad's training throughput against a
# plain PyTorch loop (benchmarks/gpu_throughput.py), in well under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]     # default OUTDIR: $OUT if set, else ./gpu-check-out
#
# Writes into OUTDIR: env.txt (nvidia-smi, versions), throughput.md (the table, targets,
# PASS/MISS), throughput.json (every number), throughput.log (progress, Ray's lines).
# Python: `python3` from PATH, or $VGRAD_PYTHON.  vgrad is imported from this checkout
# (PYTHONPATH=repo root), so it need not be installed; torch, numpy, pyarrow, fsspec and
# pyyaml must be (Ray too for the Ray rows; without it they are skipped).
# Knobs: GPU_CHECK_STEPS (timed steps per variant, default 600), GPU_CHECK_LIMIT_S (hard
# limit of the benchmark, default 390), GPU_CHECK_RAY_TIMEOUT_S (the Ray part, default 200),
# GPU_CHECK_EXTRA_ARGS (more flags for gpu_throughput.py; a smoke check without a GPU:
# GPU_CHECK_STEPS=4 GPU_CHECK_EXTRA_ARGS="--allow-cpu --width 4").
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-${OUT:-./gpu-check-out}}"
PY="${VGRAD_PYTHON:-python3}"
STEPS="${GPU_CHECK_STEPS:-600}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-390}"
RAY_TIMEOUT_S="${GPU_CHECK_RAY_TIMEOUT_S:-200}"
read -r -a EXTRA <<< "${GPU_CHECK_EXTRA_ARGS:-}"

mkdir -p "$OUTDIR" || { echo "gpu_check: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"   # no network on the GPU machine
cd "$ROOT"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_check: no Python at '$PY' (set VGRAD_PYTHON)" >&2
    exit 2
fi

{
    echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    echo "== repo $ROOT  python $(command -v "$PY")  outdir $OUTDIR"
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi || echo "(nvidia-smi failed: exit $?)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
            || true
    else
        echo "(nvidia-smi not on PATH)"
    fi
    echo "== versions"
    "$PY" - <<'EOF'
import importlib, platform, sys
print(f"python {platform.python_version()} ({sys.executable})")
try:
    import torch
    print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}, "
          f"devices {torch.cuda.device_count()}")
    if torch.cuda.is_available():
        print(f"device 0: {torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()}, "
              f"capability {torch.cuda.get_device_capability(0)}")
except Exception as e:  # noqa: BLE001
    print(f"torch: cannot import ({type(e).__name__}: {e})")
for mod in ("numpy", "pyarrow", "fsspec", "yaml", "pandas", "s3fs", "ray"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')}: importable")
    except Exception as e:  # noqa: BLE001
        print(f"{mod}: NOT importable ({type(e).__name__}: {e})")
try:
    import vgrad
    print(f"vgrad {vgrad.__version__} from {vgrad.__file__}")
except Exception as e:  # noqa: BLE001
    print(f"vgrad: NOT importable ({type(e).__name__}: {e})")
EOF
} 2>&1 | tee "$OUTDIR/env.txt"

echo "== gpu_throughput.py --steps $STEPS (limit ${LIMIT_S}s, Ray part ${RAY_TIMEOUT_S}s)"
# stdout (the table) -> throughput.md; stderr (progress) -> throughput.log; both on the terminal.
timeout --signal=TERM --kill-after=20 "$LIMIT_S" \
    "$PY" benchmarks/gpu_throughput.py --steps "$STEPS" --ray-timeout "$RAY_TIMEOUT_S" \
    --json "$OUTDIR/throughput.json" ${EXTRA[@]+"${EXTRA[@]}"} \
    2> >(tee "$OUTDIR/throughput.log" >&2) | tee "$OUTDIR/throughput.md"
rc=${PIPESTATUS[0]}
sleep 1  # let the stderr tee finish
case "$rc" in
    0) echo "== done: $OUTDIR/throughput.md, $OUTDIR/throughput.json" ;;
    2) echo "== gpu_throughput.py refused (exit 2): see above" ;;
    124|137) echo "== gpu_throughput.py ran past ${LIMIT_S}s (exit $rc); partial numbers in $OUTDIR/throughput.json" ;;
    *) echo "== gpu_throughput.py failed (exit $rc); see $OUTDIR/throughput.log" ;;
esac
exit "$rc"
