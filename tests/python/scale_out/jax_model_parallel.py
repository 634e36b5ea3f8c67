"""ModelParallel on four host devices against one device, with the options
that keep full-size state (`beta_1`, `factored=False`): where each state
variable lives, training, and a save/load round trip of the sharded state.

Usage: jax_model_parallel.py '<optimizer arguments as JSON>' <folder>
"""

import json
import math
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import max_difference, report  # noqa: E402

from adafactor import memory_report, optimizer_adafactor  # noqa: E402
from adafactor.memory import itemsize  # noqa: E402

ARGUMENTS = json.loads(sys.argv[1])
FOLDER = sys.argv[2]


def build_and_train():
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 64)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(1024, activation="relu", name="d1"),
            keras.layers.Dense(64, activation="relu", name="d2"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile(
        optimizer=optimizer_adafactor(learning_rate=0.05, **ARGUMENTS),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return model, history.history["loss"]


def shard_shape(variable):
    return list(variable.value.addressable_shards[0].data.shape)


def held_per_device(optimizer):
    """The bytes of state the first device holds, from the arrays themselves."""
    return sum(math.prod(shard_shape(v)) * itemsize(v.dtype) for v in optimizer.variables[2:])


def numpy_values(variables):
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]


single, _ = build_and_train()
devices = keras.distribution.list_devices("cpu")
mesh = keras.distribution.DeviceMesh((1, 4), ["batch", "model"], devices)
layout_map = keras.distribution.LayoutMap(mesh)
layout_map[".*d1/kernel"] = (None, "model")
layout_map[".*d1/bias"] = ("model",)
layout_map[".*d2/kernel"] = ("model", None)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
parallel, losses = build_and_train()
optimizer = parallel.optimizer
path = os.path.join(FOLDER, "sharded.keras")
parallel.save(path)
loaded = keras.saving.load_model(path)
adam = keras.optimizers.Adam()
adam.build(parallel.trainable_variables)
predicted = {
    row["optimizer"]: row["per_device_bytes"] for row in memory_report(parallel, **ARGUMENTS)
}
report(
    per_device_predicted={"adafactor": predicted["adafactor"], "Adam": predicted["Adam"]},
    per_device_held={"adafactor": held_per_device(optimizer), "Adam": held_per_device(adam)},
    devices=len(devices),
    losses=losses,
    difference=max_difference(single.get_weights(), parallel.get_weights()),
    state_difference=max_difference(
        numpy_values(single.optimizer.variables), numpy_values(optimizer.variables)
    ),
    variables={v.path: shard_shape(v) for v in parallel.trainable_variables},
    state={v.name: [list(v.shape), shard_shape(v)] for v in optimizer.variables[2:]},
    loaded_state_difference=max_difference(
        numpy_values(optimizer.variables), numpy_values(loaded.optimizer.variables)
    ),
    loaded_state_shards=[shard_shape(v) for v in loaded.optimizer.variables[2:]],
)
