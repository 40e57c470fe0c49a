#!/usr/bin/env bash
# The MoE gate model on a GPU (issue 32, `layers.moe.device`): one short check for a machine with
# CUDA. Run it in the repository root with a Python that has this project's requirements and a
# CUDA build of torch (PYTHON=..., default python3; split into words, so "env VAR=x python" works);
# it writes everything under $OUT (default runs/gpu_check) and prints it too:
#
#   device.txt        torch, its CUDA, the device
#   tests.txt         tests/layers/test_moe_device.py (its CUDA tests run here, not skipped) and
#                     tests/layers/test_moe_model.py (the CPU path, unchanged)
#   bench_gate.txt    tools/bench_moe.py --gate END --device cuda: CPU and wall per task, CPU and
#                     CUDA interleaved; that CUDA replays agree bit for bit; pairs moved vs the CPU
#   runs.txt          grid6_moe to END s twice with device = "cuda" and `cosim compare` of the
#                     two (same), and against the same run on the CPU (what differs, if anything)
#
#   OUT=/tmp/gpu PYTHON=.venv/bin/python GATE_END=120 tools/gpu_check.sh
#
# Each step runs even if one before it failed; the exit status is the first failure's.
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
END=${GATE_END:-120}
mkdir -p "$OUT"
status=0
step() {  # step NAME CMD...: run CMD, its output to $OUT/NAME and the terminal
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$OUT/$name"
    "$@" 2>&1 | tee -a "$OUT/$name"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
    return 0
}
step device.txt $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', \
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
step tests.txt $PY -m pytest -q -rs -s tests/layers/test_moe_device.py tests/layers/test_moe_model.py
step bench_gate.txt $PY tools/bench_moe.py --gate "$END" --rounds 3 --device cuda
for run in cuda1 cuda2 cpu; do
    dev=cuda
    [ "$run" = cpu ] && dev=cpu
    step runs.txt $PY -m cosim run scenarios/grid6_moe.toml --out "$OUT/$run" --overwrite -q --seed 42 \
        --end "$END" --set "layers.moe.device=\"$dev\""
done
step runs.txt $PY -m cosim compare "$OUT/cuda1" "$OUT/cuda2"
$PY -m cosim compare "$OUT/cuda1" "$OUT/cpu" 2>&1 | tee -a "$OUT/runs.txt"  # may differ: reported, not failed
exit $status
