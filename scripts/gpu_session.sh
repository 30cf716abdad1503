#!/usr/bin/env bash
# Everything a session lent a GPU machine runs in one go, from the repository root, with logs in one folder:
#   bash scripts/gpu_session.sh [LOG_DIR]        (LOG_DIR defaults to $OUT, else ./gpu-logs)
#   STAGES="gpu-tests bench" bash scripts/gpu_session.sh     (a subset; all by default, about 15 minutes)
# The machine needs CuPy, NumPy, pytest, hypothesis and tqdm (PyTorch for the side-by-side columns); gpunet itself
# runs from the checkout. Each stage has its own time limit, and one failing stage does not stop the others.
set -u
log_dir=${1:-${OUT:-gpu-logs}}
mkdir -p "$log_dir"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 GPUNET_CACHE=${GPUNET_CACHE:-/tmp/gpunet-cache}
py=${PYTHON:-python3}
status=0

stage() {  # stage NAME SECONDS COMMAND...: run, log to LOG_DIR/NAME.log, report the exit code
    local name=$1 seconds=$2
    shift 2
    case " ${STAGES:-$name} " in *" ${name%%-*} "* | *" $name "*) ;; *) return ;; esac
    local start=$SECONDS
    timeout "$seconds" "$@" >"$log_dir/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc, $((SECONDS - start)) s"
    tail -n "${TAIL_LINES:-25}" "$log_dir/$name.log"
    [ $rc -eq 0 ] || status=1
}

stage environment 60 bash -c "nvidia-smi; $py -c 'import sys, numpy, cupy; print(sys.version); print(\"numpy\", numpy.__version__, \"cupy\", cupy.__version__); cupy.show_config()'"
stage gpu-tests 300 $py -m pytest -m gpu -q -rfE -p no:cacheprovider tests
stage parity 120 $py scripts/parity_report.py --devices cuda --dtypes float16,float32,float64
if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
        stage "sanitizer-$tool" 240 compute-sanitizer --tool "$tool" --error-exitcode 9 \
            $py scripts/parity_report.py --devices cuda --dtypes float32
    done
fi
if command -v ncu >/dev/null; then  # where each row kernel stalls, at rows of 4 KB and 40 KB
    stage ncu 240 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
        --kernel-name regex:'softmax|cross_entropy' $py scripts/kernel_probe.py --cols 1000,10000
fi
stage train 300 $py -m gpunet train --device cuda --no-progress --out "$log_dir/run"
stage profile 120 $py scripts/profile_step.py --device cuda --batch 128
# Two alternating rounds (a GPU drifts less than a shared CPU; five would outrun the stage's limit).
stage bench 540 $py scripts/bench --devices cuda --rounds "${BENCH_ROUNDS:-2}" --json "$log_dir/bench.json" ${BENCH_ARGS:-}
exit $status
