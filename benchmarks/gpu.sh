#!/usr/bin/env bash
# The device check (`make bench-gpu`): one command for a short GPU loan, at most ~8 minutes on
# one H100/H200-class GPU. Prints, as ratios measured in this one run:
#   1. tests    the gpu-marked tests (pytest -m gpu: tests/e2e/test_gpu.py)
#   2. training one run's epoch against a plain PyTorch loop on the same device, MLP 3x512 and
#               10x512, Fashion-MNIST-shaped data, and with TF32, bf16-mixed and
#               torch.compile against the float32 epoch (benchmarks/training.py)
#   3. stacked  trainer.replicas=S in vmap mode, S = 1, 8, 32, 128, against S runs one after
#               the other, MLP 3x512 and 10x512 (benchmarks/stacked.py)
#   4. metrics  the epoch-end metrics suite as a fraction of an epoch (benchmarks/metrics.py)
#   5. syncs    host syncs per training step in steady state (benchmarks/syncs.py)
#   6. scores   the scores job's models, 32 at a time (loop, vmap) against one at a time
#               (benchmarks/scores.py)
# Resumable: each part's output lands in $RESULTS/<part>.txt (default $OUT when set, else
# benchmarks/gpu-results/) once it finished, and a rerun skips the parts already there.
# Each part runs under its own time limit, so one that hangs does not eat the loan.
#
# The machine needs the package's dependencies: its python3 has torch (CUDA), Lightning and
# torchmetrics; hydra-core, omegaconf and antlr4 travel as wheels made here by
# benchmarks/gpu_wheels.sh into .whl/ (ignored by git; carry it). On the device:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:. bash benchmarks/gpu.sh
set -uo pipefail
PY=${PY:-python3}
RESULTS=${RESULTS:-${OUT:-benchmarks/gpu-results}}
QUICK=${QUICK:-0}   # 1: tiny sizes on whatever device there is (to try the script on a CPU)
DEADLINE=${DEADLINE:-420}  # no part starts after this many seconds: rerun to do the rest
mkdir -p "$RESULTS"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
failed=0

part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    if [ -s "$RESULTS/$name.txt" ]; then
        echo "== $name (done in an earlier run)"; cat "$RESULTS/$name.txt"; return
    fi
    if [ $SECONDS -ge "$DEADLINE" ]; then
        echo "== $name: not started, past the ${DEADLINE} s deadline; rerun to do it"
        failed=1; return
    fi
    echo "== $name (limit ${limit} s)"
    local start=$SECONDS
    timeout "$limit" "$@" > "$RESULTS/$name.part" 2>&1
    local rc=$?
    grep -v "pytree\|LeafSpec" "$RESULTS/$name.part"
    echo "-- $name: exit $rc, $((SECONDS - start)) s"
    if [ $rc -eq 0 ]; then mv "$RESULTS/$name.part" "$RESULTS/$name.txt"; else failed=1; fi
}

$PY -c "import torch, lightning, hydra, omegaconf; print('torch', torch.__version__, '| cuda',
torch.cuda.is_available(), '|', torch.cuda.get_device_name() if torch.cuda.is_available()
else 'no GPU', '| lightning', lightning.__version__, '| hydra', hydra.__version__)" || exit 2

if [ "$QUICK" = 1 ]; then
    # the cheap half of the gpu tests: the other four (default job, DDP, divergence guard,
    # compile) have CPU twins in the suite; MEMORIZATION_GPU_TEST_DEVICE=cpu pytest -m gpu: all
    part tests 120 env MEMORIZATION_GPU_TEST_DEVICE=cpu $PY -m pytest -q -m gpu tests/e2e/test_gpu.py -x \
        -k "not default_job and not ddp and not divergence and not compile"
    part training 200 $PY benchmarks/training.py --no-record --synthetic --n-train 600 --depths 1 --epochs 2 --speed-options --compile-backend aot_eager
    part stacked 120 $PY benchmarks/stacked.py --no-record --synthetic --n-train 600 --depth 1 --replicas 1 2 --modes vmap --jobs 0
    part metrics 120 $PY benchmarks/metrics.py --synthetic --n-train 600 --probe 200 --csr-n 50
    part syncs 120 $PY benchmarks/syncs.py --n-train 600
    part scores 120 $PY benchmarks/scores.py --models 4 --stack 2 --epochs 1 --n 300
else
    part tests 180 $PY -m pytest -q -m gpu tests/e2e/test_gpu.py
    part training 180 $PY benchmarks/training.py --no-record --synthetic --depths 3 10 --epochs 3 --speed-options
    part stacked 150 $PY benchmarks/stacked.py --no-record --synthetic --depth 3 --replicas 1 8 32 128 --modes vmap --jobs 0
    part stacked10 90 $PY benchmarks/stacked.py --no-record --synthetic --depth 10 --replicas 1 8 32 --modes vmap --jobs 0
    part metrics 60 $PY benchmarks/metrics.py --synthetic
    part syncs 60 $PY benchmarks/syncs.py
    part scores 90 $PY benchmarks/scores.py --models 64 --stack 32 --epochs 3
fi
exit $failed
