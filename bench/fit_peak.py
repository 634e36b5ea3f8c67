"""`make bench`, part two: the peak memory of `fit()`, as a user feels it.

Each (backend, model, optimizer) runs `fit()` in a child process of its own;
the child reports its peak resident memory (`ru_maxrss`; on a GPU the
backend's peak device memory). SGD's peak is the floor (parameters,
gradients, activations); the table shows each optimizer's peak above it as
a multiple of the parameter bytes, and writes it as CSV with a bar chart
(R's png()): `bench/results/fit_peak.csv` and the README's
`man/figures/fit-peak.png` (`--table` names another file, the chart beside
it).

    python bench/fit_peak.py [--backends tensorflow jax torch] [--models dense]

Models: "dense", 12 x Dense(4096) (768 MiB of float32 parameters);
"dense-bf16", the same with bfloat16 variables (384 MiB; SGD's floor then
has bfloat16 weights too); "gpt2", a keras_hub GPT-2 backbone large enough
that its parameters dominate. The parameter bytes are the variables' own
(2 a number in bfloat16).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
from pathlib import Path

import results  # bench/results.py: this script's folder is on the path

HERE = Path(__file__).resolve().parent
DEFAULT_TABLE = results.RESULTS / "fit_peak.csv"
FIGURE = HERE.parent / "man" / "figures" / "fit-peak.png"

OPTIMIZERS = {
    "SGD": "keras.optimizers.SGD(0.01)",
    "adafactor": "optimizer_adafactor()",
    "adafactor beta_1": "optimizer_adafactor(beta_1=0.9)",
    "adafactor beta_1 bf16": "optimizer_adafactor(beta_1=0.9, momentum_dtype='bfloat16')",
    "adafactor round to nearest": "optimizer_adafactor(stochastic_rounding=False)",
    "Keras Adafactor": "keras.optimizers.Adafactor()",
    "Adam": "keras.optimizers.Adam()",
    "AdamW": "keras.optimizers.AdamW()",
}
# What the XLA:CPU plan of the JAX step (`_jax.py`) buys: this optimizer
# with a part of it switched (`--optimizers` names them; not run by
# default). The conditional off leaves the plain step; on forces it where
# `_jax.CONDITIONAL_PAYS` leaves it out (jaxlib < 0.5.1).
CPU_PLAN_VARIANTS = {
    "adafactor, no conditional": {"CONDITIONAL_PAYS": False},
    "adafactor, conditional": {"CONDITIONAL_PAYS": True},
    "adafactor, no heap hand-back": {"RELEASE_AFTER_COMPILE": False},
    "adafactor, neither": {"CONDITIONAL_PAYS": False, "RELEASE_AFTER_COMPILE": False},
    "adafactor beta_1, no conditional": {"CONDITIONAL_PAYS": False},
    "adafactor beta_1, conditional": {"CONDITIONAL_PAYS": True},
    "adafactor beta_1 bf16, no conditional": {"CONDITIONAL_PAYS": False},
    "adafactor beta_1 bf16, conditional": {"CONDITIONAL_PAYS": True},
}


def dense_model(keras, width=4096, layers=12):
    inputs = keras.Input((width,))
    x = inputs
    for _ in range(layers):
        x = keras.layers.Dense(width)(x)
    return keras.Model(inputs, x), ((64 * 4, width), (64 * 4, width))


def gpt2_model(keras):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=32000,
        num_layers=6,
        num_heads=8,
        hidden_dim=1024,
        intermediate_dim=4096,
        max_sequence_length=32,
        dropout=0.0,
    )
    tokens = keras.Input((32,), dtype="int32", name="token_ids")
    mask = keras.Input((32,), dtype="int32", name="padding_mask")
    features = backbone({"token_ids": tokens, "padding_mask": mask})
    model = keras.Model([tokens, mask], keras.layers.Dense(2)(features[:, 0]))
    return model, None


def child(backend: str, model_name: str, optimizer_name: str) -> None:
    """Build, compile and fit; print the peak."""
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    from adafactor import optimizer_adafactor  # noqa: F401  (used in eval)
    from adafactor.memory import itemsize

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if model_name == "dense-bf16":
        keras.config.set_dtype_policy("bfloat16")
    if model_name.startswith("dense"):
        model, (x_shape, y_shape) = dense_model(keras)
        x = rng.normal(size=x_shape).astype("float32")
        y = rng.normal(size=y_shape).astype("float32")
        loss = "mse"
    else:
        model, _ = gpt2_model(keras)
        x = [rng.integers(1, 32000, (64, 32)).astype("int32"), np.ones((64, 32), "int32")]
        y = rng.integers(0, 2, 64)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if optimizer_name in CPU_PLAN_VARIANTS:
        from adafactor import _jax

        for switch, value in CPU_PLAN_VARIANTS[optimizer_name].items():
            setattr(_jax, switch, value)
    expression = OPTIMIZERS[optimizer_name.partition(",")[0]]
    optimizer = eval(expression)
    model.compile(optimizer=optimizer, loss=loss)
    parameters = sum(int(np.prod(v.shape)) * itemsize(v.dtype) for v in model.trainable_variables)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    print(
        "RESULT "
        + json.dumps(
            {
                "peak_mib": peak_mib(backend),
                "parameter_mib": parameters / 2**20,
                "device": device(backend),
                "versions": results.versions(backend),
            }
        )
    )


def device(backend: str) -> str:
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def peak_mib(backend: str) -> float:
    """The backend's peak device memory on a GPU, else the peak RSS."""
    kind = device(backend)
    if kind == "gpu":
        if backend == "jax":
            import jax

            return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--models", nargs="+", default=["dense", "dense-bf16", "gpt2"])
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=list(OPTIMIZERS),
        choices=[*OPTIMIZERS, *CPU_PLAN_VARIANTS],
    )
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    for model in args.models:
        for backend in args.backends:
            measured = {
                o: results.run_child(__file__, backend, [model, o], timeout=1800)
                for o in args.optimizers
            }
            floor = measured.get("SGD")
            for optimizer, result in measured.items():
                if result is None or floor is None:
                    continue
                above = (result["peak_mib"] - floor["peak_mib"]) / result["parameter_mib"]
                rows.append(
                    {
                        "model": model,
                        "backend": backend,
                        "device": result["device"],
                        "versions": result["versions"],
                        "optimizer": optimizer,
                        "peak_mib": round(result["peak_mib"]),
                        "parameter_mib": round(result["parameter_mib"]),
                        "above_sgd_x_parameters": round(above, 2),
                    }
                )
                print(
                    f"{model:6} {backend:10} {optimizer:22} peak {result['peak_mib']:7.0f} MiB"
                    f"  SGD + {above:5.2f} x parameters",
                    flush=True,
                )
    table = results.write(args.table.stem, rows, args.table.parent)
    # The default table's chart is the README's figure.
    chart = FIGURE if args.table == DEFAULT_TABLE else table.with_suffix(".png")
    chart.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["Rscript", str(HERE / "fit_peak_chart.R"), str(table), str(chart)], check=True)
    print(f"Table: {table}\nChart: {chart}")


if __name__ == "__main__":
    main()
