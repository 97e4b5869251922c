#!/usr/bin/env bash
# Every GPU check medtune has, in one go, on a machine with one CUDA GPU and PyTorch installed.
#
#   bash benchmarks/gpu_checks.sh [STAGE...]    # default: env tests kernels 7b
#
# Stages, each under its own time limit (seconds, overridable) so a slow one cannot eat the rest:
#   env      GPU, driver and library versions                                    LIMIT_ENV=60
#   tests    pytest -m gpu: the compiled kernels against fp64, determinism, ...  LIMIT_TESTS=200
#   kernels  benchmarks/kernels/bench_norms.py at the model widths (KERNEL_ARGS) LIMIT_KERNELS=240
#   sweep    bench_norms.py --sweep: medtune's launch settings (warps, programs per SM, prefetching
#            rows or not) at the model widths, GPU clock; writes sweep.csv (SWEEP_ARGS)  LIMIT_SWEEP=240
#   7b       benchmarks/methods/gpu_7b.py: LLaVA-Med 7B NF4, ln / ln-fused / QLoRA,
#            with the memory planner's estimate beside the measured peak (GPU_7B_ARGS) LIMIT_7B=300
#   step     benchmarks/methods/fused_step.py: whole LN-tuning steps of MISS (BLIP-VQA), with and
#            without the fused norms, batch 1 to 32 (STEP_ARGS)                  LIMIT_STEP=240
#   trainstep benchmarks/train_step/bench_train_step.py: `medtune train llava ln` itself on a 7B-shaped
#            LLaVA-Med v1.5 checkpoint written to disk: bf16 under 24 GiB, NF4 under 8 GiB, the old settings;
#            tokens/s, useful-FLOP utilisation, peak memory (TRAIN_STEP_ARGS)   LIMIT_TRAINSTEP=420
#   demo     `medtune train llava ln` on the demo through the CUDA path: bf16, the fused norms
#            patched in, scores before and after (DEMO_ARGS)                     LIMIT_DEMO=180
# The limits of "env tests kernels" (with its 60 s report) add up to 560 s, "env 7b demo" to 540 s: each fits
# a ten-minute window; "env trainstep" 480 s. The default runs all but sweep, step, trainstep and demo.
# benchmarks/fetch_wheels.sh DIR fetches, elsewhere, what an offline machine with PyTorch lacks.
#
# Results land in $OUT (default ./gpu-results): checks.log (everything printed), kernels/norms.csv,
# kernels/norms.png, kernels/sweep.csv, gpu_7b.csv, fused_step.csv, train_step.csv. The packages run from this checkout
# through PYTHONPATH, so nothing is built or downloaded. On an offline machine, MEDTUNE_WHEELS=DIR first
# installs the wheels in DIR (bitsandbytes for the 7b stage, say) into a private folder.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG=$OUT/checks.log
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
unset TRITON_INTERPRET MEDTUNE_KERNELS_DRY_RUN

if [ -n "${MEDTUNE_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/medtune-wheels "$MEDTUNE_WHEELS"/*.whl 2>&1 | tee -a "$LOG" || exit 1
  export PYTHONPATH=/tmp/medtune-wheels${PYTHONPATH:+:$PYTHONPATH}
fi
for src in kernels/src packages/core-models/src packages/data/src packages/eval/src packages/tuning/src; do
  PYTHONPATH=$ROOT/$src${PYTHONPATH:+:$PYTHONPATH}
done
export PYTHONPATH

stage() {  # stage NAME LIMIT COMMAND...: run it under its limit, log it, note its exit status
  local name=$1 limit=$2 start=$SECONDS status
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  status=${PIPESTATUS[0]}
  [ "$status" = 124 ] && echo "!! $name ran past its ${limit}s limit" | tee -a "$LOG"
  echo "== $name: exit $status after $((SECONDS - start))s" | tee -a "$LOG"
  SUMMARY+=("$name: exit $status, $((SECONDS - start))s")
}

versions() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" - <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "transformers", "peft", "accelerate", "bitsandbytes", "pyarrow", "datasets",
             "medtune.kernels"):
    try:
        module = importlib.import_module(name)
        print(f"{name:16s}", getattr(module, "__version__", "(from this checkout)"))
    except Exception as err:  # a missing library is reported, not fatal: later stages say what they need
        print(f"{name:16s} MISSING ({type(err).__name__}: {err})")
import torch
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"cuda: {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
          f"{props.total_memory / 2**30:.1f} GiB")
else:
    print("cuda: no device visible to torch")
PY
}

export PY
export -f versions  # timeout runs programs, not shell functions
SUMMARY=()
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(env tests kernels 7b)
for name in "${STAGES[@]}"; do  # a typo must not cost the stages before it
  case $name in
    env | tests | kernels | sweep | 7b | step | trainstep | demo) ;;
    *) echo "unknown stage '$name'; the stages are env, tests, kernels, sweep, 7b, step, trainstep, demo" >&2; exit 2 ;;
  esac
done
for name in "${STAGES[@]}"; do
  case $name in
    env) stage env "${LIMIT_ENV:-60}" bash -c versions ;;
    tests) stage tests "${LIMIT_TESTS:-200}" "$PY" -m pytest kernels/tests -m gpu -q -p no:cacheprovider ;;
    kernels)
      # shellcheck disable=SC2086  # KERNEL_ARGS is a list of flags
      # LLaMA-7B's width first (the speed-up target is at 4096): a run cut by its limit keeps what it
      # measured in the CSV, and --report judges that.
      stage kernels "${LIMIT_KERNELS:-240}" "$PY" benchmarks/kernels/bench_norms.py --out "$OUT/kernels" \
        ${KERNEL_ARGS:---hidden 4096 8192 768 5120 --rows 16384 --dtype bf16}
      [ -f "$OUT/kernels/norms.csv" ] && stage kernels-report 60 "$PY" benchmarks/kernels/bench_norms.py \
        --report --out "$OUT/kernels"
      ;;
    sweep)
      # shellcheck disable=SC2086
      stage sweep "${LIMIT_SWEEP:-240}" "$PY" benchmarks/kernels/bench_norms.py --sweep --out "$OUT/kernels" \
        ${SWEEP_ARGS:---hidden 768 4096 5120 8192 --rows 16384 --dtype bf16}
      ;;
    7b)
      # shellcheck disable=SC2086
      stage 7b "${LIMIT_7B:-300}" "$PY" benchmarks/methods/gpu_7b.py --out "$OUT/gpu_7b.csv" \
        ${GPU_7B_ARGS:---rounds 2 --steps 2}
      ;;
    step)
      # shellcheck disable=SC2086
      stage step "${LIMIT_STEP:-240}" "$PY" benchmarks/methods/fused_step.py --out "$OUT/fused_step.csv" \
        ${STEP_ARGS:-}
      ;;
    trainstep)
      # shellcheck disable=SC2086
      stage trainstep "${LIMIT_TRAINSTEP:-420}" "$PY" benchmarks/train_step/bench_train_step.py \
        --out "$OUT/train_step.csv" ${TRAIN_STEP_ARGS:-}
      ;;
    demo)
      # shellcheck disable=SC2086
      stage demo "${LIMIT_DEMO:-180}" "$PY" -m medtune.tuning.cli train llava ln --quiet \
        --output-dir "$OUT/runs" ${DEMO_ARGS:-}
      ;;
  esac
done
echo "== summary" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
