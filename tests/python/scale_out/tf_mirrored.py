"""MirroredStrategy over two logical CPU devices against one device."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
from common import max_difference, report, train  # noqa: E402

from adafactor import optimizer_adafactor  # noqa: E402

single, _ = train(keras, optimizer_adafactor)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored, losses = train(keras, optimizer_adafactor)
report(
    replicas=strategy.num_replicas_in_sync,
    difference=max_difference(single.get_weights(), mirrored.get_weights()),
    losses=losses,
)
