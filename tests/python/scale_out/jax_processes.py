"""Training across processes on JAX's CPU collectives, against one process.

    jax_processes.py <mode> <process_id> <num_processes> <port>

mode: "data" (DataParallel) or "model" (ModelParallel, the first kernel
sharded on its 1024 axis). `num_processes` 1 runs the reference: one process
with 4 devices. Otherwise each process has 4 / num_processes devices and
feeds its own slice of every global batch (NumPy input, so
`auto_shard_dataset=False`). Every process prints one RESULT line: losses,
weights and optimizer state, gathered whole.
"""

import os
import sys

MODE, PROCESS, PROCESSES, PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
DEVICES = 4
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES // PROCESSES}"

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import report  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

GLOBAL_BATCH, STEPS = 32, 4

if PROCESSES > 1:
    keras.distribution.initialize(
        job_addresses=f"localhost:{PORT}", num_processes=PROCESSES, process_id=PROCESS
    )

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

devices = keras.distribution.list_devices("cpu")
if MODE == "data":
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
else:
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*d1/kernel"] = (None, "model")
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch", auto_shard_dataset=False
    )
keras.distribution.set_distribution(distribution)

keras.utils.set_random_seed(4)
rng = np.random.default_rng(2)
x = rng.normal(size=(GLOBAL_BATCH * STEPS, 32)).astype("float32")
y = (x[:, :3].sum(axis=1) > 0).astype("int32")
# This process's slice of each global batch, in order.
local = GLOBAL_BATCH // PROCESSES


def my_slice(array):
    batches = array.reshape(STEPS, PROCESSES, local, *array.shape[1:])
    return batches[:, PROCESS].reshape(STEPS * local, *array.shape[1:])


model = keras.Sequential(
    [
        keras.Input((32,)),
        keras.layers.Dense(1024, activation="relu", name="d1"),
        keras.layers.Dense(2, name="out"),
    ]
)
model.compile(
    optimizer=optimizer_adafactor(learning_rate=0.05, beta_1=0.9),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
history = model.fit(my_slice(x), my_slice(y), batch_size=local, epochs=2, shuffle=False, verbose=0)


def whole(variable):
    return np.asarray(multihost_utils.process_allgather(variable.value, tiled=True)).tolist()


report(
    processes=PROCESSES,
    global_devices=len(devices),
    local_devices=jax.local_device_count(),
    losses=history.history["loss"],
    weights=[whole(v) for v in model.trainable_variables],
    state=[whole(v) for v in model.optimizer.variables[2:]],
    state_shards=[
        list(v.value.addressable_shards[0].data.shape) for v in model.optimizer.variables[2:]
    ],
)
