"""Training throughput of the platform trainer against a minimal hand-written PyTorch loop.

Both train the same MLP (features -> 256 -> 256 -> 1) on the same in-memory data with the same
batch size, AdamW settings, BCE loss, precision and number of epochs, in the same process. Each
is measured --repeats times, alternating which goes first, and the best run of each counts.
Throughput is training rows per second of training loop; the platform's per-epoch validation is
reported separately, end to end. On CUDA, GPU utilization is sampled with nvidia-smi while each
measured run trains.

Needs only torch and numpy, so it runs on GPU machines without pandas or Dagster:

    python bench/trainer_throughput.py --rows 200000 --epochs 2

--precision, --batch-size and --data-location take comma-separated lists; every combination is
measured on the same data and each prints its own RESULT line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Run from a checkout without installing the package (the GPU machine has no pip install step).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ml_platform.training.config import TrainingConfig, resolve_device
from ml_platform.training.loop import train_arrays
from ml_platform.training.modules import build_module

HIDDEN_SIZES = [256, 256]
LEARNING_RATE = 1e-3
SEED = 7


@dataclass(frozen=True)
class Setting:
    """One combination of the grid being measured."""

    data_location: str
    precision: str
    batch_size: int


@dataclass
class Measurement:
    """One timed training run."""

    samples_per_second: float
    gpu_utilization: float | None = None
    end_to_end_samples_per_second: float | None = None


def make_data(rows: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable binary data: y = (x @ w + noise > 0), balanced."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    weights = rng.standard_normal(features).astype(np.float32)
    noise = rng.normal(0.0, 0.5, rows).astype(np.float32)
    y = (x @ weights + noise > 0.0).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuUtilization:
    """Samples utilization.gpu with nvidia-smi every 100 ms while the block runs.

    The block starts only once the sampler has printed its first line, and only samples taken
    inside the block count, so nvidia-smi's start-up time does not dilute short runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[tuple[float, float]] = []
        self.window = (0.0, 0.0)
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.first_sample = threading.Event()

    def __enter__(self) -> GpuUtilization:
        if self.device.type != "cuda" or shutil.which("nvidia-smi") is None:
            return self
        command = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            "100",
        ]
        if "CUDA_VISIBLE_DEVICES" not in os.environ and self.device.index is not None:
            # Without remapping, the torch index is the nvidia-smi index.
            command += ["-i", str(self.device.index)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.first_sample.wait(timeout=3)
        self.window = (time.perf_counter(), math.inf)
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), float(line)))
                self.first_sample.set()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        synchronize(self.device)
        # One more period so the last stretch of the run is sampled too.
        time.sleep(0.15)
        self.window = (self.window[0], time.perf_counter())
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.reader is not None:
            self.reader.join(timeout=5)

    @property
    def mean(self) -> float | None:
        """Mean utilization in percent inside the block, or None without samples."""
        start, end = self.window
        inside = [value for moment, value in self.samples if start < moment <= end]
        return sum(inside) / len(inside) if inside else None


def hand_written_loop(
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    epochs: int,
    batch_size: int,
    precision: str,
) -> float:
    """The loop a person would write by hand; returns seconds spent training."""
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    width = x.shape[1]
    for size in HIDDEN_SIZES:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    model = nn.Sequential(*layers, nn.Linear(width, 1)).to(device)
    # The same AdamW the platform uses: fused on CUDA, the default implementation on CPU.
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=LEARNING_RATE,
        weight_decay=0.0,
        fused=True if device.type == "cuda" else None,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (
        contextlib.nullcontext
        if dtype is None
        else functools.partial(torch.autocast, device.type, dtype=dtype)
    )
    rows = x.shape[0]
    synchronize(device)
    started = time.perf_counter()
    for _ in range(epochs):
        permutation = torch.randperm(rows, device=x.device)
        for start in range(0, rows, batch_size):
            index = permutation[start : start + batch_size]
            batch_x = x[index].to(device, non_blocking=True)
            batch_y = y[index].to(device, non_blocking=True)
            with autocast():
                loss = loss_fn(model(batch_x).squeeze(1), batch_y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def measure_hand(
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    args: argparse.Namespace,
    setting: Setting,
) -> Measurement:
    with GpuUtilization(device) as utilization:
        seconds = hand_written_loop(
            x, y, device, args.epochs, setting.batch_size, setting.precision
        )
    return Measurement(
        samples_per_second=x.shape[0] * args.epochs / seconds,
        gpu_utilization=utilization.mean,
    )


def measure_platform(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    args: argparse.Namespace,
    setting: Setting,
) -> Measurement:
    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=setting.batch_size,
        learning_rate=LEARNING_RATE,
        weight_decay=0.0,
        early_stopping_patience=0,
        seed=SEED,
        device=args.device,
        precision=setting.precision,
        data_location=setting.data_location,
    )
    torch.manual_seed(SEED)
    module = build_module("mlp", x.shape[1], 1, {"hidden_sizes": HIDDEN_SIZES})
    with GpuUtilization(resolve_device(args.device)) as utilization:
        started = time.perf_counter()
        result = train_arrays(
            x, y, x_val, y_val, "binary_classification", module, config, log=lambda _: None
        )
        seconds = time.perf_counter() - started
    return Measurement(
        samples_per_second=result.samples_per_second,
        gpu_utilization=utilization.mean,
        end_to_end_samples_per_second=x.shape[0] * args.epochs / seconds,
    )


def place(
    tensors: tuple[torch.Tensor, ...], device: torch.device, data_location: str
) -> tuple[torch.Tensor, ...]:
    """Puts the data where both loops read it from: the device, or pinned host memory."""
    if device.type != "cuda":
        return tensors
    if data_location == "pinned":
        return tuple(tensor.pin_memory() for tensor in tensors)
    return tuple(tensor.to(device) for tensor in tensors)


def compare(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    device: torch.device,
    args: argparse.Namespace,
    setting: Setting,
) -> None:
    """Measures both loops for one setting and prints each repeat and the RESULT line."""
    # Warm-up (CUDA context, cuBLAS handles, allocator) on a slice, not measured.
    warm_rows = min(args.rows, setting.batch_size * 8)
    warm_args = argparse.Namespace(**{**vars(args), "epochs": 1})
    measure_hand(x[:warm_rows], y[:warm_rows], device, warm_args, setting)
    measure_platform(x[:warm_rows], y[:warm_rows], x_val, y_val, warm_args, setting)

    hand_runs: list[Measurement] = []
    platform_runs: list[Measurement] = []
    label = f"{setting.data_location} {setting.precision} batch={setting.batch_size}"
    for repeat in range(args.repeats):
        # Alternating who goes first keeps thermal and cache effects from favouring one loop.
        order = ["hand", "platform"] if repeat % 2 == 0 else ["platform", "hand"]
        for which in order:
            if which == "hand":
                hand_runs.append(measure_hand(x, y, device, args, setting))
            else:
                platform_runs.append(measure_platform(x, y, x_val, y_val, args, setting))
        end_to_end = platform_runs[-1].end_to_end_samples_per_second or 0.0
        print(
            f"  {label} repeat {repeat + 1}: "
            f"hand={hand_runs[-1].samples_per_second:,.0f}/s "
            f"platform={platform_runs[-1].samples_per_second:,.0f}/s "
            f"(platform end to end, validation and setup included: {end_to_end:,.0f}/s)",
            flush=True,
        )
    hand = max(hand_runs, key=lambda run: run.samples_per_second)
    platform = max(platform_runs, key=lambda run: run.samples_per_second)
    print(
        f"RESULT device={device.type} precision={setting.precision} rows={args.rows} "
        f"batch={setting.batch_size} data={setting.data_location} "
        f"hand={hand.samples_per_second:.0f}/s platform={platform.samples_per_second:.0f}/s "
        f"ratio={platform.samples_per_second / hand.samples_per_second:.2f} "
        f"gpu_util_hand={percent(hand.gpu_utilization)} "
        f"gpu_util_platform={percent(platform.gpu_utilization)}",
        flush=True,
    )


def percent(value: float | None) -> str:
    return f"{value:.0f}%" if value is not None else "n/a"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Platform trainer vs a hand-written PyTorch loop: training samples/s."
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch-size", default="4096", help="comma-separated list")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16,fp16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data-location",
        default="device",
        help="comma-separated: device,pinned (CUDA only; CPU data is always in memory)",
    )
    parser.add_argument(
        "--data-npz",
        default=None,
        help="train on arrays from bench/export_example_arrays.py instead of synthetic data",
    )
    parser.add_argument(
        "--hidden", default="256,256", help="hidden layer sizes of the MLP, comma-separated"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch_sizes = [int(value) for value in args.batch_size.split(",")]
    precisions = args.precision.split(",")
    locations = args.data_location.split(",") if device.type == "cuda" else ["device"]
    for location in locations:
        if location not in ("device", "pinned"):
            raise SystemExit(f"--data-location must be device or pinned, got {location!r}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__} on {device} ({name}), {torch.get_num_threads()} CPU threads; "
        f"rows={args.rows} features={args.features} epochs={args.epochs} "
        f"repeats={args.repeats}",
        flush=True,
    )
    HIDDEN_SIZES[:] = [int(size) for size in args.hidden.split(",")]
    if args.data_npz:
        arrays = np.load(args.data_npz)
        x_cpu, y_cpu = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
        x_val_cpu, y_val_cpu = torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"])
        args.rows = x_cpu.shape[0]
        print(f"data from {args.data_npz}: {tuple(x_cpu.shape)} train, hidden {HIDDEN_SIZES}")
    else:
        x_cpu, y_cpu = make_data(args.rows, args.features, seed=0)
        validation_rows = max(1000, args.rows // 100)
        x_val_cpu, y_val_cpu = make_data(validation_rows, args.features, seed=1)

    for location in locations:
        # Placed once per location; every precision and batch size reads the same tensors.
        x, y, x_val, y_val = place((x_cpu, y_cpu, x_val_cpu, y_val_cpu), device, location)
        for precision in precisions:
            for batch_size in batch_sizes:
                setting = Setting(location, precision, batch_size)
                compare(x, y, x_val, y_val, device, args, setting)
        del x, y, x_val, y_val
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
