"""Where a variable lives: its layout under a Keras distribution and the
device its step runs on. Plans ask here; nothing here knows the optimizer."""

from __future__ import annotations

import keras

from adafactor._rule import RMS_FORMS


def layout_without_axis(layout, axis, rank):
    """A variable's layout (a Keras `TensorLayout` or a JAX `NamedSharding`)
    with `axis` removed: the layout of a factor that reduces over it. None
    (replicated, or no distribution) stays None."""
    if isinstance(layout, keras.distribution.TensorLayout):
        axes = list(layout.axes)
        del axes[axis]
        return keras.distribution.TensorLayout(axes, layout.device_mesh)
    spec = getattr(layout, "spec", None)
    if spec is None:
        return None
    import jax

    axes = list(spec) + [None] * (rank - len(spec))  # a spec may omit trailing axes
    del axes[axis]
    return jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec(*axes))


def is_replicated(variable) -> bool:
    """Whether every device holds all of `variable` (no Keras distribution,
    `DataParallel`, or a layout that cuts no axis): its step then needs no
    collective. Unknown layouts count as cut."""
    layout = getattr(variable, "_layout", None)
    if layout is None:
        return True
    if isinstance(layout, keras.distribution.TensorLayout):
        axes = layout.axes
    else:
        axes = getattr(layout, "spec", None)
    return axes is not None and all(axis is None for axis in axes)


def check_rms_form(form) -> None:
    """A clear error for an RMS form that is neither "auto" nor one of
    `RMS_FORMS`."""
    if form != "auto" and form not in RMS_FORMS:
        accepted = ", ".join(map(repr, ("auto", *RMS_FORMS)))
        raise ValueError(f"`rms_form` must be one of {accepted}; got {form!r}.")


def rms_form(variable, requested) -> str:
    """`requested` (an optimizer's `rms_form`), with "auto" resolved by the
    device `variable` lives on; on JAX "platform": the platform the step is
    lowered for decides (`_jax.weighted_row_sums_by_platform`)."""
    if requested != "auto":
        return requested
    if keras.backend.backend() == "jax":
        return "platform"
    return "fused" if on_accelerator(variable) else "matvec"


def on_accelerator(variable) -> bool:
    """Whether `variable` lives on a GPU or TPU: TensorFlow and PyTorch run
    a variable's step where the variable is (not wherever a GPU is visible:
    a model kept on the CPU of a GPU machine takes the CPU's form)."""
    if keras.backend.backend() == "torch":
        return variable.value.device.type != "cpu"
    # TensorFlow: the tf.Variable's placement (a graph's tensors have none);
    # Keras's TensorFlow optimizer hands `update_step` the tf.Variable itself.
    device = str(getattr(getattr(variable, "_value", variable), "device", "")).upper()
    return "GPU:" in device or "TPU:" in device


def batch_devices() -> int:
    """How many devices the batch is split over under the current Keras
    distribution (1 without one, or with a batch axis of one device): each
    gradient is then summed across them."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    names = list(mesh.axis_names)
    name = getattr(distribution, "batch_dim_name", None)
    return int(mesh.shape[names.index(name)]) if name in names else 1
