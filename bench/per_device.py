"""`make bench`, part three: the optimizer state each device holds under
Keras's `ModelParallel` (JAX, 4 host devices), measured on the arrays after
`build()`, beside what `adafactor.memory_report()` predicts; then the
memory of one device in `fit()`'s train step: the parameters and state it
holds (its shards) and the temporaries of the compiled step (XLA's memory
analysis of the per-device program), against SGD's, under ModelParallel and
under DataParallel.

The model: Dense(1024) -> Dense(64) on 64 features, the first kernel
(64, 1024) laid out (None, "model"), the second (1024, 64) ("model", None),
the first bias ("model",).

    python bench/per_device.py
"""

import math
import os

import numpy as np

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import keras  # noqa: E402

import results  # noqa: E402  (bench/results.py: this script's folder is on the path)
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


def state_per_device():
    """The state one device holds under ModelParallel; rows for the results."""
    mesh = keras.distribution.DeviceMesh((1, 4), ["batch", "model"])
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*d1/kernel"] = (None, "model")
    layout_map[".*d1/bias"] = ("model",)
    layout_map[".*d2/kernel"] = ("model", None)
    layout_map[".*/s[0246]/kernel"] = (None, "model")
    layout_map[".*/s[1357]/kernel"] = ("model", None)
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
    table = []
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
        table.append(
            dict(
                versions=results.versions("jax"),
                optimizer=name,
                state_kib=round(state / 1024, 1),
                times_parameters=round(state / parameters, 3),
                memory_report_kib=round(predicted / 1024, 1),
            )
        )
    return table


STEP_WIDTH, STEP_LAYERS, STEP_BATCH = 2048, 8, 64


def step_memory(make_optimizer):
    """(bytes held, temporaries) of one device in the train step `fit()`
    compiles (jax.jit of `train_step`, the state donated), and the
    parameter bytes a device holds. Held: parameters and optimizer state,
    counted from the arrays (the compiled step leaves out the ones it does
    not read, e.g. Keras Adafactor's velocity of a factored kernel).
    The model: 8 x Dense(2048), the kernels sharded alternately on their
    output and input axis, as in a Megatron MLP."""
    from adafactor import _jax

    model = keras.Sequential(
        [keras.Input((STEP_WIDTH,))]
        + [keras.layers.Dense(STEP_WIDTH, name=f"s{i}") for i in range(STEP_LAYERS)]
    )
    model.compile(optimizer=make_optimizer(), loss="mse")
    data = (np.zeros((STEP_BATCH, STEP_WIDTH), "float32"),) * 2
    compiled = _jax.compiled_train_step(model, data)
    parameters = held(model.trainable_variables)
    holding = parameters + held(model.optimizer.variables)
    return holding, compiled.memory_analysis().temp_size_in_bytes, parameters


def print_step_memory(distribution):
    print(
        f"\n{STEP_LAYERS} x Dense({STEP_WIDTH}) under {distribution} on 4 devices, one "
        "device's train step, x its parameter bytes\n\n"
        "| optimizer | parameters and state | temporaries | peak above SGD's |\n|---|---|---|---|"
    )
    measured = {"SGD": step_memory(lambda: keras.optimizers.SGD(0.01))}
    for name, make in OPTIMIZERS.items():
        measured[name] = step_memory(make)
    floor = sum(measured["SGD"][:2])
    table = []
    for name, (holding, temporaries, parameters) in measured.items():
        above = (holding + temporaries - floor) / parameters
        print(
            f"| {name} | {holding / parameters:.3f} | {temporaries / parameters:.3f} | "
            f"{above:+.2f} |"
        )
        table.append(
            dict(
                versions=results.versions("jax"),
                distribution=distribution,
                optimizer=name,
                held_x_parameters=round(holding / parameters, 3),
                temporaries_x_parameters=round(temporaries / parameters, 3),
                above_sgd_x_parameters=round(above, 2),
            )
        )
    return table


def main():
    """Both tables, written to bench/results/per_device_*.csv."""
    results.write("per_device_state", state_per_device())
    step = print_step_memory("ModelParallel")  # the distribution state_per_device() set
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    step += print_step_memory("DataParallel")
    print(f"\n{results.write('per_device_step', step)}")


if __name__ == "__main__":
    main()
