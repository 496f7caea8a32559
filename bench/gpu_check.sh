#!/usr/bin/env bash
# One-shot check of the platform trainer on a CUDA machine, run once from the repository root.
# Needs torch (and numpy) only: no pandas, no Dagster, no install step. Everything goes to stdout.
#
#   bash bench/gpu_check.sh              # on the GPU machine (under 7 minutes in total)
#   bash bench/gpu_check.sh --cpu-smoke  # here: the same steps, tiny, on CPU
#
# Steps: nvidia-smi and versions; trainer_throughput.py (platform vs hand-written loop) for
# fp32, bf16 and fp16 at batch 8192 and 65536 with the data on the device and in pinned memory;
# then train_arrays with checkpointing on the GPU, resumed, compared with an uninterrupted run.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

MODE=gpu
[[ "${1:-}" == "--cpu-smoke" ]] && MODE=cpu

# The whole script stays inside this many seconds: each step's timeout is cut to what is left,
# less RESERVE_SECONDS kept back for the steps still to come.
BUDGET_SECONDS=390
RESERVE_SECONDS=0
FAILED=()

PYTHON=""
for candidate in python python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
    PYTHON=$candidate
    break
  fi
done
if [[ -z "$PYTHON" ]]; then
  echo "neither python nor python3 can import torch" >&2
  exit 1
fi

# step NAME SECONDS COMMAND...: runs COMMAND under a timeout, records failures, never aborts.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_SECONDS - RESERVE_SECONDS - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "=== SKIP ${name}: only ${left}s of the ${BUDGET_SECONDS}s budget left"
    FAILED+=("${name} (skipped)")
    return
  fi
  echo "=== ${name} (timeout ${limit}s, ${SECONDS}s elapsed)"
  timeout -k 5 "$limit" "$@"
  local status=$?
  echo "=== ${name}: exit ${status}$( ((status == 124)) && echo ' (timed out)')"
  ((status == 0)) || FAILED+=("${name} (exit ${status})")
}

CHECK_SCRIPT=$(mktemp "${TMPDIR:-/tmp}/checkpoint_check.XXXXXX")
trap 'rm -f "$CHECK_SCRIPT"' EXIT
cat >"$CHECK_SCRIPT" <<'EOF'
"""Trains with checkpoints, resumes to more epochs, and compares with an uninterrupted run."""

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ml_platform.training.config import TrainingConfig
from ml_platform.training.loop import train_arrays
from ml_platform.training.modules import build_module

device = os.environ["CHECK_DEVICE"]
on_cuda = device.startswith("cuda")
rng = np.random.default_rng(0)
x = rng.standard_normal((50_000, 32), dtype=np.float32)
y = (x[:, :4].sum(axis=1) + rng.normal(0, 0.5, 50_000) > 0).astype(np.float32)
split = 40_000


def fit(config, checkpoint_dir=None, log=print):
    torch.manual_seed(config.seed)
    module = build_module("mlp", 32, 1, {"hidden_sizes": [64, 64], "dropout": 0.1})
    return train_arrays(
        x[:split], y[:split], x[split:], y[split:], "binary_classification", module, config,
        checkpoint_dir=checkpoint_dir, log=log,
    )


precisions = ("fp32", "bf16", "fp16") if on_cuda else ("fp32",)
locations = ("device", "pinned") if on_cuda else ("device",)
for precision in precisions:
    for location in locations:
        config = TrainingConfig(
            epochs=3, batch_size=4096, device=device, precision=precision,
            data_location=location, early_stopping_patience=0,
        )
        longer = dataclasses.replace(config, epochs=5)
        with tempfile.TemporaryDirectory() as directory:
            first = fit(config, directory)
            checkpoint = torch.load(Path(directory) / "last.pt", weights_only=True)
            assert checkpoint["epoch"] == 3, checkpoint["epoch"]
            if precision == "fp16":
                assert checkpoint["grad_scaler"] is not None, "fp16 must checkpoint the GradScaler"
            lines = []
            resumed = fit(longer, directory, log=lines.append)
            assert resumed.resumed_from_epoch == 3, resumed.resumed_from_epoch
            assert "resuming from checkpoint at epoch 3" in lines, lines
        uninterrupted = fit(longer, log=lambda line: None)
        resumed_state = resumed.module.state_dict()
        difference = max(
            (resumed_state[name] - tensor).abs().max().item()
            for name, tensor in uninterrupted.module.state_dict().items()
        )
        print(
            f"CHECK device={resumed.device} precision={precision} data={location} "
            f"resumed_from={resumed.resumed_from_epoch} epochs={resumed.epochs_run} "
            f"validation_accuracy={resumed.history[-1]['validation_accuracy']:.3f} "
            f"max_weight_difference_vs_uninterrupted={difference:.2e} "
            f"samples_per_second={first.samples_per_second:.0f}",
            flush=True,
        )
print("CHECKPOINT OK")
EOF

if [[ $MODE == gpu ]]; then
  DEVICE=cuda
  BENCH=(--device cuda --rows 2000000 --epochs 3 --repeats 3 --batch-size 8192,65536
    --data-location device,pinned)
  step "nvidia-smi" 20 nvidia-smi
else
  DEVICE=cpu
  BENCH=(--device cpu --rows 20000 --epochs 1 --repeats 1 --batch-size 4096)
fi

step "versions" 60 "$PYTHON" -c "
import sys, numpy, torch
print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| torch', torch.__version__,
      '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version())
print('cuda available:', torch.cuda.is_available(), '| devices:', torch.cuda.device_count(),
      '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
"

# Slow throughput runs must not crowd out the checkpoint check at the end.
RESERVE_SECONDS=75
for precision in fp32 bf16 fp16; do
  # On CPU only fp32 is worth a smoke run: autocast there is many times slower.
  [[ $MODE == cpu && $precision != fp32 ]] && continue
  step "throughput ${precision}" 100 "$PYTHON" bench/trainer_throughput.py "${BENCH[@]}" \
    --precision "$precision"
done

# The example model (fraud_detection: MLP 27 -> 128 -> 64 -> 1) on its real preprocessed features,
# exported by bench/export_example_arrays.py (carried to the machine beside the repo).
if [[ -f bench/example_arrays.npz ]]; then
  EXAMPLE=(--data-npz bench/example_arrays.npz --hidden 128,64 --epochs 3 --repeats 3)
  [[ $MODE == gpu ]] && EXAMPLE+=(--device cuda --batch-size 2048,65536 --precision fp32,bf16
    --data-location device) || EXAMPLE+=(--device cpu --batch-size 2048 --repeats 1 --epochs 1)
  step "example model throughput" 60 "$PYTHON" bench/trainer_throughput.py "${EXAMPLE[@]}"
fi

RESERVE_SECONDS=0
step "checkpoint and resume on ${DEVICE}" 75 env CHECK_DEVICE="$DEVICE" "$PYTHON" "$CHECK_SCRIPT"

echo "=== done in ${SECONDS}s"
if ((${#FAILED[@]})); then
  printf '=== FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "=== ALL STEPS PASSED"
