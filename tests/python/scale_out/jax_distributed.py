"""DataParallel and ModelParallel on two host devices against one device."""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import max_difference, report, train  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

devices = keras.distribution.list_devices("cpu")
single, _ = train(keras, optimizer_adafactor)

if sys.argv[1] == "data":
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    parallel, losses = train(keras, optimizer_adafactor)
    distribution = keras.distribution.distribution()
    report(
        devices=len(devices),
        losses=losses,
        difference=max_difference(single.get_weights(), parallel.get_weights()),
        # Proof that the work was split: the variables and the optimizer
        # state live on every device, and a batch is cut along its first axis.
        weight_devices=[len(v.value.sharding.device_set) for v in parallel.trainable_variables],
        state_devices=[len(v.value.sharding.device_set) for v in parallel.optimizer.variables],
        batch_axes=list(distribution.get_data_layout((32, 32)).axes),
        batch_shards=len(
            distribution.get_data_layout((32, 32)).backend_layout.addressable_devices_indices_map(
                (32, 32)
            )
        ),
    )
else:
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*dense.*kernel"] = (None, "model")
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    parallel, losses = train(keras, optimizer_adafactor)
    kernels = [v for v in parallel.trainable_variables if len(v.shape) == 2]
    kernel_shards = [max(s.data.size for s in v.value.addressable_shards) for v in kernels]
    state = parallel.optimizer.variables[2:]
    state_shards = [max(s.data.size for s in v.value.addressable_shards) for v in state]
    report(
        devices=len(devices),
        losses=losses,
        difference=max_difference(single.get_weights(), parallel.get_weights()),
        kernel_sizes=[int(np.prod(v.shape)) for v in kernels],
        kernel_shard_sizes=kernel_shards,
        largest_state_rank=max(len(v.shape) for v in state),
        state_per_device=sum(state_shards),
    )
