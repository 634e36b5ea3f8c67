"""`make bench`, the accelerators' part: fit()'s JAX train step compiled for
XLA:TPU (a v5e 2x2 slice), XLA:GPU (H100s) and XLA:CPU (4 host devices) on
this machine, without the hardware (`adafactor._compile`), and what each
device holds at the step's peak and moves in it, by optimizer.

    python bench/accelerator_memory.py            # every case: about 40 minutes
    python bench/accelerator_memory.py --quick    # dense cases, TPU and GPU only

Runs in the accelerator environment `make` builds (.venv-accelerators: jax
with libtpu and the CUDA plugin, at pinned versions). Writes
`bench/results/accelerator_memory.csv`: per device, the parameters' bytes,
the step's peak (arguments + outputs - aliased + temporaries, every state
array counted) and its bytes accessed (XLA's cost model), each also above
SGD's as a multiple of the parameter bytes that device holds.

Models: "dense" = 12 x Dense(4096), batch 64, on one device, under
DataParallel (4 devices) and "Megatron" (ModelParallel on a (1, 4) mesh,
kernels laid out alternately (None, "model") and ("model", None));
"Gemma" = keras_hub's GemmaCausalLM from a small config with random
weights (6 layers, hidden 1024, 127 M parameters), batch 8 x 256, under
ModelParallel with keras_hub's own `GemmaBackbone.get_layout_map`. Models
are built inside a `keras.StatelessScope(initialize_variables=False)`: no
weights are made.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import results  # noqa: E402  (bench/results.py: this script's folder is on the path)
from adafactor import _compile, _jax, optimizer_adafactor  # noqa: E402

OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.01),
    "adafactor": optimizer_adafactor,
    "adafactor beta_1": lambda: optimizer_adafactor(beta_1=0.9),
    "adafactor beta_1 bf16": lambda: optimizer_adafactor(beta_1=0.9, momentum_dtype="bfloat16"),
    "Adam": keras.optimizers.Adam,
    "Keras Adafactor": keras.optimizers.Adafactor,
    # What was tried: the updates left to the compiler's scheduler.
    "adafactor, updates unordered": optimizer_adafactor,
}
DENSE_WIDTH, DENSE_LAYERS, DENSE_BATCH = 4096, 12, 64
DISTRIBUTIONS = ("one device", "DataParallel", "Megatron")
GEMMA = dict(
    vocabulary_size=32000,
    num_layers=6,
    num_query_heads=8,
    num_key_value_heads=4,
    hidden_dim=1024,
    intermediate_dim=8192,
    head_dim=128,
)
GEMMA_BATCH, GEMMA_LENGTH = 8, 256


def set_distribution(name: str, layers: int = DENSE_LAYERS) -> None:
    """Keras's distribution for `name` (DISTRIBUTIONS, or "Gemma layout
    map") on the 4 host devices, or none."""
    if name == "one device":
        keras.distribution.set_distribution(None)
        return
    if name == "DataParallel":
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return
    mesh = keras.distribution.DeviceMesh((1, 4), ["batch", "model"])
    if name == "Megatron":
        layout_map = keras.distribution.LayoutMap(mesh)
        for i in range(layers):
            layout_map[f".*dense_{i}/kernel"] = (None, "model") if i % 2 == 0 else ("model", None)
    else:
        import keras_hub

        layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )


def dense_model(optimizer, width=DENSE_WIDTH, layers=DENSE_LAYERS, batch=DENSE_BATCH):
    """The dense stack compiled with `optimizer`, and a batch's shapes."""
    with keras.StatelessScope(initialize_variables=False):
        model = keras.Sequential(
            [keras.Input((width,))]
            + [keras.layers.Dense(width, name=f"dense_{i}") for i in range(layers)]
        )
        model.compile(optimizer=optimizer, loss="mse")
    data = (jax.ShapeDtypeStruct((batch, width), "float32"),) * 2
    return model, data


def gemma_model(optimizer):
    """keras_hub's Gemma causal LM (random weights) with `optimizer`, and a
    batch's shapes (token ids, their targets)."""
    import keras_hub

    with keras.StatelessScope(initialize_variables=False):
        backbone = keras_hub.models.GemmaBackbone(**GEMMA)
    # The task makes an optimizer of its own (Keras's variables, not in a
    # StatelessScope); the backbone's weights stay unmade.
    model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    tokens = jax.ShapeDtypeStruct((GEMMA_BATCH, GEMMA_LENGTH), "int32")
    inputs = {"token_ids": tokens, "padding_mask": tokens}
    return model, (inputs, tokens)


def parameter_bytes(model, devices: int) -> float:
    """The parameter bytes one device holds: a variable cut across the
    model axis is held in quarters."""
    total = 0.0
    for v in model.trainable_variables:
        axes = getattr(v._layout, "axes", None) or ()
        cut = devices if any(axis == "model" for axis in axes) else 1
        total += np.prod(v.shape) * np.dtype(v.dtype).itemsize / cut
    return total


def measure(compiler, model_name, distribution, dtype, optimizer_name):
    """One compile: the figures of one device."""
    keras.config.set_dtype_policy(dtype)
    ordered = _jax.InOrder.gradient_of
    if optimizer_name.endswith("updates unordered"):
        _jax.InOrder.gradient_of = lambda self, variable, gradient: gradient
    try:
        set_distribution(distribution)
        if model_name == "Gemma":
            model, data = gemma_model(OPTIMIZERS[optimizer_name]())
        else:
            model, data = dense_model(OPTIMIZERS[optimizer_name]())
        count = 1 if distribution == "one device" else 4
        compiled = _compile.compile_train_step(model, data, _compile.devices(compiler, count))
        return _compile.figures(compiled, compiler), parameter_bytes(model, count)
    finally:
        _jax.InOrder.gradient_of = ordered
        keras.config.set_dtype_policy("float32")
        keras.distribution.set_distribution(None)


def cases(quick: bool):
    """(compiler, model, distribution, dtype) of every case measured."""
    for compiler in ("tpu", "gpu"):
        for distribution in DISTRIBUTIONS:
            for dtype in ("float32", "bfloat16"):
                yield compiler, "dense", distribution, dtype
        if not quick:
            yield compiler, "Gemma", "Gemma layout map", "float32"
    if not quick:  # the host's figures, for comparison
        yield "cpu", "dense", "Megatron", "float32"


COMPILERS = {"tpu": "XLA:TPU v5e", "gpu": "XLA:GPU H100", "cpu": "XLA:CPU"}
VERSIONS = "jax {}, libtpu {}, jax-cuda12-plugin {}, Keras {}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    return VERSIONS.format(jax.__version__, of("libtpu"), of("jax-cuda12-plugin"), of("keras"))


def case_rows(compiler, model_name, distribution, dtype) -> list[dict]:
    """Every optimizer on one case, above SGD's from the same case."""
    rows, sgd = [], None
    for name in OPTIMIZERS:
        started = time.time()
        figures, parameters = measure(compiler, model_name, distribution, dtype, name)
        sgd = sgd or figures
        above = (figures.peak_bytes - sgd.peak_bytes) / parameters
        moved = (figures.bytes_accessed - sgd.bytes_accessed) / parameters
        print(
            f"| {compiler} | {model_name} | {distribution} | {dtype} | {name} | "
            f"{above:+.2f} | {moved:+.2f} | ({time.time() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        rows.append(
            dict(
                versions=versions(),
                compiler=COMPILERS[compiler],
                model=model_name,
                distribution=distribution,
                weights=dtype,
                optimizer=name,
                parameter_mib=round(parameters / 2**20, 1),
                peak_mib=round(figures.peak_bytes / 2**20, 1),
                peak_above_sgd_x_parameters=round(above, 3),
                accessed_mib=round(figures.bytes_accessed / 2**20, 1),
                accessed_above_sgd_x_parameters=round(moved, 3),
            )
        )
    return rows


def main(argv=None) -> None:
    """Each case in a child process of its own (the host memory of many
    compiles is not handed back), its rows read from its last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dense cases, TPU and GPU only")
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.case:
        print("ROWS " + json.dumps(case_rows(*arguments.case)), flush=True)
        return
    print(
        "| compiler | model | distribution | weights | optimizer | peak above SGD's | "
        "bytes accessed above SGD's |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    rows = []
    for case in cases(arguments.quick):
        done = subprocess.run(
            [sys.executable, __file__, "--case", *case], stdout=subprocess.PIPE, text=True
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("ROWS ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"accelerator_memory: the case {case} failed")
        rows += json.loads(lines[-1][len("ROWS ") :])
    print(results.write("accelerator_memory" + ("_quick" if arguments.quick else ""), rows))


if __name__ == "__main__":
    sys.exit(main())
