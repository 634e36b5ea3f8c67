"""bfloat16 weights rounded stochastically on four host devices: under
DataParallel every device holds a replica of each weight, under ModelParallel
(a 2 x 2 mesh, kernels cut on "model") two devices hold each shard. Reports,
for each weight, whether every copy of each part is the same bit for bit.

Usage: jax_rounding_replicas.py data|model
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import report, train  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

devices = keras.distribution.list_devices("cpu")
if sys.argv[1] == "data":
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
else:
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*dense.*kernel"] = (None, "model")
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
keras.config.set_dtype_policy("bfloat16")
model, losses = train(keras, optimizer_adafactor)


def copies_agree(variable):
    """Whether the devices holding the same part of `variable` hold the
    same bits."""
    parts = {}
    for shard in variable.value.addressable_shards:
        bits = np.asarray(shard.data).view(np.uint16).tobytes()
        parts.setdefault(str(shard.index), set()).add(bits)
    return all(len(copies) == 1 for copies in parts.values()), len(parts)


agreement = [copies_agree(v) for v in model.trainable_variables]
report(
    devices=len(devices),
    losses=[float(loss) for loss in losses],
    dtypes=sorted({str(v.dtype) for v in model.trainable_variables}),
    agree=[agree for agree, _ in agreement],
    parts=[parts for _, parts in agreement],
    copies=[len(v.value.addressable_shards) for v in model.trainable_variables],
)
