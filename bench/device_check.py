"""One command for a GPU: this optimizer against Keras's on the device users train on.

    python bench/device_check.py          # on a machine with one GPU: about 5 minutes
    python bench/device_check.py --cpu    # a tiny run on the CPU (`make test` runs it)

For JAX, TensorFlow and PyTorch in turn, and for float32 and bfloat16
variables, each of this optimizer, Keras's Adafactor, Adam and SGD in a
child process of its own (a backend's peak memory is its process's):

- the peak device memory of `fit()` on a stack of dense layers
  (`jax.Device.memory_stats()`, `tf.config.experimental.get_memory_info`,
  `torch.cuda.max_memory_allocated()`), and that peak above SGD's as a
  multiple of the parameters' bytes;
- the median step time on a transformer-shaped parameter set (`bench.py`'s),
  compiled as Keras compiles it on a GPU (JAX `jit`, TensorFlow XLA, PyTorch
  eagerly), and its ratios to Adam's and Keras Adafactor's from the same run;
- on JAX, beside them, fit()'s train step as XLA compiles it for the device:
  its peak and the bytes it moves (`adafactor._compile`), the count that
  `bench/accelerator_memory.py` makes without a device, so that a GPU
  checks it.

Writes one CSV (`bench/results/device_check.csv`, with the date, versions and
device; the site's benchmarks article shows it) and prints a table and the
targets: step <= 1.0 x Adam's and <= 0.5 x Keras Adafactor's, `fit()` peak
<= SGD's + 0.10 x the parameters.
Exits with an error, saying which, where a backend sees no GPU (or is not
installed); `--cpu` runs the same code on the CPU with tiny sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import results  # bench/results.py: this script's folder is on the path

HERE = Path(__file__).resolve().parent
BACKENDS = ("jax", "tensorflow", "torch")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = {
    "adafactor": "adafactor.optimizer_adafactor()",
    "Keras Adafactor": "keras.optimizers.Adafactor()",
    "Adam": "keras.optimizers.Adam()",
    "SGD": "keras.optimizers.SGD(0.01)",
}
# (fit()'s dense stack: width, layers, batch; the step's transformer set: d,
# layers; timed steps), on a GPU and in the tiny CPU mode.
SIZES = {
    "gpu": SimpleNamespace(width=4096, layers=12, batch=64, d=2048, d_layers=5, steps=50),
    "cpu": SimpleNamespace(width=64, layers=2, batch=8, d=64, d_layers=1, steps=3),
}
TARGET_NAMES = ("vs Adam", "vs Keras Adafactor", "fit() peak")
TARGETS = "step <= 1.0 x Adam, <= 0.5 x Keras Adafactor; fit() peak <= SGD + 0.10 x parameters"


def child(backend: str, optimizer_name: str, dtype: str, mode: str) -> None:
    """Measure one optimizer; print a RESULT line (or NO_GPU and exit 3)."""
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    import adafactor  # noqa: F401  (used in eval)
    import bench
    import fit_peak

    if mode == "gpu" and not bench.on_gpu():
        print(f"NO_GPU {backend} sees no GPU (Keras {keras.__version__})", flush=True)
        sys.exit(3)
    size = SIZES[mode]
    keras.config.set_dtype_policy(dtype)
    keras.utils.set_random_seed(0)
    model, (x_shape, y_shape) = fit_peak.dense_model(keras, size.width, size.layers)
    model.compile(optimizer=eval(OPTIMIZERS[optimizer_name]), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape).astype("float32")
    y = rng.normal(size=y_shape).astype("float32")
    model.fit(x, y, batch_size=size.batch, epochs=2, verbose=0)
    peak = fit_peak.peak_mib(backend)  # before the step timing allocates more
    parameters = bench.nbytes(model.trainable_variables) / 2**20
    compiled = compiled_figures(backend, model, (x[: size.batch], y[: size.batch]), mode)
    del model

    shapes = bench.parameter_shapes(size.d, size.d_layers)
    variables = [keras.Variable(rng.normal(scale=0.02, size=s), dtype=dtype) for s in shapes]
    grads = [
        keras.ops.convert_to_tensor(rng.normal(scale=1e-3, size=s), dtype=dtype) for s in shapes
    ]
    timing = SimpleNamespace(steps=size.steps, gpu=mode == "gpu")
    seconds, _ = bench.MEASURES[backend](
        eval(OPTIMIZERS[optimizer_name]), variables, grads, timing, optimizer_name
    )
    result = dict(
        fit_peak_mib=peak,
        parameter_mib=parameters,
        step_ms=seconds * 1e3,
        device=fit_peak.device(backend),
        versions=results.versions(backend),
        **compiled,
    )
    print("RESULT " + json.dumps(result), flush=True)


def compiled_figures(backend, model, batch, mode) -> dict:
    """On JAX, fit()'s train step as XLA compiles it for this device: its
    peak (arguments + outputs - aliased + temporaries) and the bytes it
    moves, in MiB: what `bench/accelerator_memory.py` counts without the
    device, here beside the measured peak, to check the count against it.
    Empty for the other backends."""
    if backend != "jax":
        return {}
    import jax

    from adafactor import _compile

    step = _compile.compile_train_step(model, batch, jax.devices()[:1])
    figures = _compile.figures(step, mode)
    return dict(
        compiled_peak_mib=figures.peak_bytes / 2**20,
        compiled_accessed_mib=figures.bytes_accessed / 2**20,
    )


def run_child(backend, optimizer, dtype, mode, timeout):
    """One child's result; None, with the reason printed, when it fails."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    arguments = ["--child", backend, optimizer, dtype, mode]
    try:
        done = subprocess.run(
            [sys.executable, __file__, *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"  {backend} {dtype} {optimizer}: no result within {timeout} s", flush=True)
        return None
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        if line.startswith("NO_GPU "):
            return {"no_gpu": line[len("NO_GPU ") :]}
    missing = "ModuleNotFoundError" in done.stderr
    why = f"{backend} is not installed" if missing else done.stderr.strip()[-1500:]
    print(f"  {backend} {dtype} {optimizer}: failed: {why}", flush=True)
    return {"failed": why}


# Children run at once: one on a GPU (its figures are one process's alone);
# on the CPU, whose tiny run checks the code and measures nothing, two.
AT_ONCE = {"gpu": 1, "cpu": 2}


def measure(backends, mode, timeout) -> tuple[list[dict], list[str]]:
    """Rows of the table, and what kept a backend from being measured (the
    rest of that backend is then skipped)."""
    rows, problems = [], []
    for backend in backends:
        try:
            for dtype in DTYPES:
                with ThreadPoolExecutor(AT_ONCE[mode]) as pool:
                    running = {
                        o: pool.submit(measure_one, backend, o, dtype, mode, timeout)
                        for o in OPTIMIZERS
                    }
                measured = {o: child.result() for o, child in running.items()}
                rows += table_rows(backend, dtype, measured)
        except NotMeasuredError as why:
            problems.append(str(why))
    return rows, problems


class NotMeasuredError(Exception):
    """A backend that sees no GPU, is not installed or failed."""


def measure_one(backend, optimizer, dtype, mode, timeout):
    """One child's result; None when it ran out of time."""
    result = run_child(backend, optimizer, dtype, mode, timeout)
    if result and "no_gpu" in result:
        raise NotMeasuredError(result["no_gpu"])
    if result and "failed" in result:
        raise NotMeasuredError(f"{backend}: {result['failed']}")
    print(f"  {backend} {dtype} {optimizer}: {result}", flush=True)
    return result


def table_rows(backend, dtype, measured) -> list[dict]:
    """Ratios within one backend and dtype, from one run."""
    sgd, adam, keras_adafactor = (measured.get(k) for k in ("SGD", "Adam", "Keras Adafactor"))
    rows = []
    for optimizer, result in measured.items():
        if result is None:
            continue
        rows.append(
            dict(
                backend=backend,
                versions=result["versions"],
                device=result["device"],
                dtype=dtype,
                optimizer=optimizer,
                step_ms=round(result["step_ms"], 3),
                step_vs_adam=ratio(result, adam, "step_ms"),
                step_vs_keras_adafactor=ratio(result, keras_adafactor, "step_ms"),
                fit_peak_mib=round(result["fit_peak_mib"], 1),
                compiled_peak_mib=rounded(result.get("compiled_peak_mib")),
                compiled_accessed_mib=rounded(result.get("compiled_accessed_mib")),
                parameter_mib=round(result["parameter_mib"], 1),
                fit_above_sgd_x_parameters=(
                    None
                    if sgd is None
                    else round(
                        (result["fit_peak_mib"] - sgd["fit_peak_mib"]) / result["parameter_mib"], 3
                    )
                ),
            )
        )
    return rows


def rounded(mib):
    return None if mib is None else round(mib, 1)


def ratio(result, other, key):
    return None if other is None else round(result[key] / other[key], 3)


def print_table(rows, mode) -> None:
    print()
    print(
        "| backend | dtype | optimizer | step ms | / Adam | / Keras Adafactor "
        "| fit() peak MiB | compiled peak MiB | compiled bytes MiB | above SGD x params |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['backend']} | {row['dtype']} | {row['optimizer']} | {row['step_ms']} "
            f"| {row['step_vs_adam']} | {row['step_vs_keras_adafactor']} "
            f"| {row['fit_peak_mib']} | {row['compiled_peak_mib']} "
            f"| {row['compiled_accessed_mib']} | {row['fit_above_sgd_x_parameters']} |"
        )
    if mode != "gpu":
        return  # the tiny CPU sizes measure nothing a target is about
    print(f"\nTargets on a GPU: {TARGETS}")
    for row in rows:
        if row["optimizer"] == "adafactor":
            met = (
                (row["step_vs_adam"] or 0) <= 1.0,
                (row["step_vs_keras_adafactor"] or 0) <= 0.5,
                (row["fit_above_sgd_x_parameters"] or 0) <= 0.10,
            )
            marks = ", ".join(
                f"{name} {'met' if ok else 'NOT met'}"
                for name, ok in zip(TARGET_NAMES, met, strict=True)
            )
            print(f"{row['backend']} {row['dtype']} on {row['device']}: {marks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--output",
        type=Path,
        help="the CSV (default bench/results/device_check.csv; with --cpu, in bench/output)",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    mode = "cpu" if args.cpu else "gpu"
    scratch = HERE / "output" / "device_check_cpu.csv"
    output = args.output or (scratch if args.cpu else results.RESULTS / "device_check.csv")
    started = time.monotonic()
    rows, problems = measure(args.backends, mode, timeout=120 if mode == "gpu" else 300)
    if rows:
        results.write(output.stem, rows, output.parent)
        print_table(rows, mode)
        print(f"\nCSV: {output} ({time.monotonic() - started:.0f} s)")
    if problems:
        sys.exit(
            "device_check: not measured: "
            + "; ".join(problems)
            + ". Needs a GPU build of each backend (jax[cuda12], tensorflow[and-cuda], a CUDA "
            "torch) in this Python, or --backends with those that have one; --cpu for the tiny "
            "CPU run."
        )


if __name__ == "__main__":
    main()
