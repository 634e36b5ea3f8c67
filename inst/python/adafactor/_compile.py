"""Keras's JAX train step compiled for an accelerator this machine need not
have: XLA:TPU (libtpu's compile-only topologies) and XLA:GPU (the CUDA PJRT
plugin given a card's description), with `JAX_PLATFORMS=cpu`.

The model is built where it is (its variables on host devices, under the
Keras distribution the user set); its state is handed to the compiler as
`jax.ShapeDtypeStruct`s with the same `PartitionSpec`s on a mesh of the
target's devices of the same shape, and `train_step` is lowered as `fit()`
lowers it (keras/src/backend/jax/trainer.py: `jax.jit`, the state donated,
the state's shardings as the output's under a distribution). What the
compiler then reports per device (`memory_analysis()`, its cost model's
bytes accessed) is what a user's device holds and moves in that step, as
far as the compiler's buffer assignment knows it: not a device allocator's
fragmentation, and XLA:GPU compiles without autotuning here.

Needs `jax[tpu]` (libtpu) for TPUs, `jax-cuda12-plugin` and
`jax-cuda12-pjrt` for GPUs, at JAX's version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# The compile-only TPU devices: a 2x2 slice of each generation (a 1x1 one is
# refused by libtpu; one device of the slice stands for it).
TPU_TOPOLOGIES = {"v4": "v4:2x2x1", "v5e": "v5e:2x2", "v5p": "v5p:2x2x1", "v6e": "v6e:2x2"}

# stream_executor.GpuTargetConfigProto, protobuf text: what XLA:GPU needs
# of a card to compile for it (openxla/xla
# xla/backends/gpu/target_config/specs/ has the full descriptions).
GPU_TARGETS = {
    "H100": """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 3352320000000 l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: 84942979072
  shared_memory_per_block_optin: 232448 cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA" dnn_version_info { major: 9 minor: 8 }
runtime_version { major: 12 minor: 9 } device_description_str: "NVIDIA H100 80GB HBM3"
""",
}

# libtpu looks for a TPU host's metadata unless told it is on none, and
# lets one process at a time load it unless told otherwise (compiling
# touches no chip).
_TPU_HOST = {
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    "TPU_SKIP_MDS_QUERY": "1",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "TPU_WORKER_ID": "0",
    "TPU_ACCELERATOR_TYPE": "v5litepod-4",
}


def devices(compiler: str, count: int) -> list:
    """`count` devices to compile for: `compiler` "tpu" (a v5e slice),
    "gpu" (H100s) or "cpu" (this host's devices)."""
    import jax
    from jax.experimental import topologies

    if compiler == "tpu":
        for name, value in _TPU_HOST.items():
            os.environ.setdefault(name, value)
        found = topologies.get_topology_desc(
            topology_name=TPU_TOPOLOGIES["v5e"], platform="tpu"
        ).devices
    elif compiler == "gpu":
        found = topologies.get_topology_desc(
            platform="cuda", topology=f"1x1x{count}", target_config=GPU_TARGETS["H100"]
        ).devices
    elif compiler == "cpu":
        found = jax.devices("cpu")
    else:
        raise ValueError(f"compiler must be 'tpu', 'gpu' or 'cpu', not {compiler!r}")
    if len(found) < count:
        raise ValueError(f"{compiler}: {count} devices asked for, {len(found)} to be had")
    return list(found[:count])


def _target_mesh(targets):
    """The target devices as a mesh of the Keras distribution's shape and
    axis names (one device without a distribution)."""
    import keras
    from jax.sharding import Mesh

    distribution = keras.distribution.distribution()
    if distribution is None:
        shape, names = (1,), ("device",)
    else:
        shape = tuple(distribution.device_mesh.shape)
        names = tuple(distribution.device_mesh.axis_names)
    return Mesh(np.array(targets[: int(np.prod(shape))]).reshape(shape), names)


def _sharding(mesh, layout):
    """A Keras layout (`TensorLayout`, a JAX sharding, or None: replicated)
    as a sharding of `mesh`."""
    from jax.sharding import NamedSharding, PartitionSpec

    axes = getattr(layout, "axes", None) or getattr(layout, "spec", None) or ()
    return NamedSharding(mesh, PartitionSpec(*axes))


def compile_train_step(model, data, targets):
    """`model.train_step` (a compiled Keras model on JAX) on a batch of
    `data` (arrays or `ShapeDtypeStruct`s, nested as `fit()` gets them),
    compiled for the devices `targets` (`devices()`), laid out as the Keras
    distribution lays out the model's variables and the batch.

    Only the variables' shapes, dtypes and layouts are read: a model built
    inside `keras.StatelessScope(initialize_variables=False)` is compiled
    for without its weights ever being made. Every state array is an
    argument (`keep_unused`): a device holds what the step does not read
    too (Keras's Adafactor's velocity of a factored kernel)."""
    import keras

    _build_optimizer(model)
    with keras.StatelessScope(initialize_variables=False):
        return _compile_built(model, data, targets)


def _compile_built(model, data, targets):
    """`compile_train_step` of a model whose optimizer is built, inside a
    scope that makes no variable's value (Keras makes the values of the
    variables it deferred when its outermost StatelessScope ends)."""
    import jax
    import keras

    # As fit() does first: the compiled loss and metrics get their state.
    model._symbolic_build(data_batch=data)
    mesh = _target_mesh(targets)
    groups = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )
    shardings = tuple([_sharding(mesh, _layout(v)) for v in group] for group in groups)
    state = tuple(
        [jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s) for v, s in zip(g, ss, strict=True)]
        for g, ss in zip(groups, shardings, strict=True)
    )
    distribution = keras.distribution.distribution()
    batch = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape,
            a.dtype,
            sharding=_sharding(mesh, distribution and distribution.get_data_layout(a.shape)),
        ),
        data,
    )
    out_shardings = None if distribution is None else (None, shardings)
    step = jax.jit(
        model.train_step, donate_argnums=0, keep_unused=True, out_shardings=out_shardings
    )
    return step.trace(state, batch).lower().compile()


def _layout(variable):
    """The variable's layout under the Keras distribution: its own, or the
    distribution's for it, kept, where it has not been made (Keras lays a
    variable out when it makes its value, and an optimizer's state takes
    its variable's layout)."""
    import keras

    distribution = keras.distribution.distribution()
    if getattr(variable, "_layout", None) is None and distribution is not None:
        variable._layout = distribution.get_variable_layout(variable)
    return getattr(variable, "_layout", None)


def _build_optimizer(model) -> None:
    """Build the model's optimizer for its variables, laid out first (the
    optimizer's state takes their layouts). Inside a `keras.StatelessScope`,
    so no state is made, where the optimizer allows it: Keras's Adafactor
    makes a variable outside `add_variable` and is built for real."""
    import keras

    for variable in model.trainable_variables + model.non_trainable_variables:
        _layout(variable)
    optimizer = model.optimizer
    if optimizer.built:
        return
    if isinstance(optimizer, keras.optimizers.Adafactor):
        optimizer.build(model.trainable_variables)
        return
    with keras.StatelessScope(initialize_variables=False):
        optimizer.build(model.trainable_variables)


@dataclass
class StepFigures:
    """What one device holds at the step's peak and what the step moves."""

    peak_bytes: int  # arguments + outputs - aliased + temporaries
    temporary_bytes: int
    bytes_accessed: float  # XLA's cost model, summed over the step's kernels


def figures(compiled, compiler: str) -> StepFigures:
    """`compiled`'s per-device figures. XLA:TPU's cost analysis comes with
    the executable; XLA:GPU's compile-only executable has none, so XLA's
    cost model is run over its optimized modules (a CPU client runs it)."""
    memory = compiled.memory_analysis()
    peak = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    return StepFigures(peak, memory.temp_size_in_bytes, _bytes_accessed(compiled, compiler))


def _bytes_accessed(compiled, compiler: str) -> float:
    import jax
    from jax._src.lib import xla_client

    if compiler != "gpu":
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        return float(analysis["bytes accessed"])
    client = jax.devices("cpu")[0].client
    modules = compiled.runtime_executable().hlo_modules()
    return float(
        sum(
            xla_client._xla.hlo_module_cost_analysis(client, module)["bytes accessed"]
            for module in modules
        )
    )
