"""`make bench`, part three: the optimizer state each device holds under
Keras's `ModelParallel` (JAX, 4 host devices), measured on the arrays after
`build()`, beside what `adafactor.memory_report()` predicts.

The model: Dense(1024) -> Dense(64) on 64 features, the first kernel
(64, 1024) laid out (None, "model"), the second (1024, 64) ("model", None),
the first bias ("model",).

    python bench/per_device.py
"""

import math
import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import keras  # noqa: E402

from adafactor import memory_report, optimizer_adafactor  # noqa: E402
from adafactor.memory import itemsize  # noqa: E402

OPTIMIZERS = {
    "adafactor": lambda: optimizer_adafactor(),
    "adafactor beta_1": lambda: optimizer_adafactor(beta_1=0.9),
    "adafactor beta_1 bf16": lambda: optimizer_adafactor(beta_1=0.9, momentum_dtype="bfloat16"),
    "Keras Adafactor": keras.optimizers.Adafactor,
    "Adam": keras.optimizers.Adam,
}
REPORTED = {
    "adafactor": ("adafactor", {}),
    "adafactor beta_1": ("adafactor", {"beta_1": 0.9}),
    "adafactor beta_1 bf16": ("adafactor", {"beta_1": 0.9, "momentum_dtype": "bfloat16"}),
    "Keras Adafactor": ("keras Adafactor", {}),
    "Adam": ("Adam", {}),
}


def held(variables):
    """Bytes of the first device's shards."""
    return sum(
        math.prod(v.value.addressable_shards[0].data.shape) * itemsize(v.dtype) for v in variables
    )


def main():
    mesh = keras.distribution.DeviceMesh((1, 4), ["batch", "model"])
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*d1/kernel"] = (None, "model")
    layout_map[".*d1/bias"] = ("model",)
    layout_map[".*d2/kernel"] = ("model", None)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(1024, name="d1"),
            keras.layers.Dense(64, name="d2"),
        ]
    )
    parameters = held(model.trainable_variables)
    print(
        f"ModelParallel on 4 devices: each holds {parameters / 1024:.1f} KiB of parameters\n\n"
        "| optimizer | state per device, KiB | x parameters per device | memory_report() |\n"
        "|---|---|---|---|"
    )
    for name, make in OPTIMIZERS.items():
        optimizer = make()
        optimizer.build(model.trainable_variables)
        state = held(optimizer.variables[2:])
        label, arguments = REPORTED[name]
        rows = {row["optimizer"]: row for row in memory_report(model, **arguments)}
        predicted = rows[label]["per_device_bytes"]
        print(
            f"| {name} | {state / 1024:.1f} | {state / parameters:.3f} | "
            f"{'equal' if predicted == state else f'{predicted / 1024:.1f} KiB'} |"
        )


if __name__ == "__main__":
    main()
