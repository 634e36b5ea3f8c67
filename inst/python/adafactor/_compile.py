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

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from adafactor._targets import GPU_CARDS, GPU_TARGET, Target, target

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


def target_devices(chosen: Target, count: int | None = None) -> list:
    """The first `count` (all) compile-only devices of `chosen`."""
    from jax.experimental import topologies

    count = chosen.device_count if count is None else count
    if count > chosen.device_count:
        raise ValueError(
            f"compiled_for {chosen.name!r} has {chosen.device_count} device(s), and the Keras "
            f"distribution's mesh {count}: name a target with at least {count}."
        )
    require_compiler(chosen.platform)
    if chosen.platform == "tpu":
        for variable, value in _TPU_HOST.items():
            os.environ.setdefault(variable, value)
        # libtpu lays a slice out on hosts of 2x2 chips, unless told that a
        # lone chip is its own host.
        bounds = {"chips_per_host_bounds": [1, 1, 1]} if chosen.device_count == 1 else {}
        found = topologies.get_topology_desc(
            topology_name=f"{chosen.chip}:{chosen.shape}", platform="tpu", **bounds
        ).devices
    else:
        config = GPU_TARGET.format(**GPU_CARDS[chosen.chip])
        found = topologies.get_topology_desc(
            platform="cuda", topology=f"1x1x{chosen.device_count}", target_config=config
        ).devices
    return list(found[:count])


# What each platform's compile-only compiler comes in: the module that
# shows it installed, and the packages, at JAX's own version.
_COMPILERS = {
    "tpu": ("libtpu", "jax[tpu]=={jax}", "XLA:TPU (libtpu)"),
    "gpu": (
        "jax_plugins.xla_cuda12",
        "jax-cuda12-plugin=={jax} jax-cuda12-pjrt=={jax}",
        "XLA:GPU (JAX's CUDA plugin; no GPU or NVIDIA libraries needed)",
    ),
}


def require_compiler(platform: str) -> None:
    """An ImportError that says what to install where `platform`'s
    compiler is not installed beside JAX."""
    import importlib.util

    import jax

    module, packages, what = _COMPILERS[platform]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        packages = packages.format(jax=jax.__version__)
        quoted = " ".join(f'"{p}"' for p in packages.split())
        raise ImportError(
            f"compiled_for a {platform.upper()} needs {what}, which is not installed beside "
            f"JAX {jax.__version__}. Install it into this Python: pip install {quoted} "
            f"(from R: reticulate::py_install(c({', '.join(quoted.split())}), pip = TRUE), "
            f"or reticulate::py_require() before Python starts). The report without "
            f"compiled_for needs neither."
        )


def devices(compiler: str, count: int) -> list:
    """`count` devices to compile for: `compiler` "tpu" (a v5e slice),
    "gpu" (H100s) or "cpu" (this host's devices)."""
    import jax

    if compiler == "tpu":
        return target_devices(target("v5e 2x2"), count)
    if compiler == "gpu":
        return target_devices(target(f"H100 x {count}"), count)
    if compiler == "cpu":
        found = jax.devices("cpu")
        if len(found) < count:
            raise ValueError(f"cpu: {count} devices asked for, {len(found)} to be had")
        return list(found[:count])
    raise ValueError(f"compiler must be 'tpu', 'gpu' or 'cpu', not {compiler!r}")


def mesh_device_count() -> int:
    """The devices the Keras distribution lays the model out on (1 without
    one)."""
    import keras

    distribution = keras.distribution.distribution()
    return 1 if distribution is None else int(np.prod(distribution.device_mesh.shape))


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
    shardings = tuple([_sharding(mesh, layout(v)) for v in group] for group in groups)
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


def layout(variable):
    """The variable's layout: its own, or, where its value has not been made,
    the Keras distribution's for it, kept (Keras lays a variable out when it
    makes its value, and an optimizer's state takes its variable's layout).
    A variable made before the distribution was set keeps none."""
    import keras

    distribution = keras.distribution.distribution()
    unmade = getattr(variable, "_value", True) is None
    if getattr(variable, "_layout", None) is None and distribution is not None and unmade:
        variable._layout = distribution.get_variable_layout(variable)
    return getattr(variable, "_layout", None)


def _build_optimizer(model) -> None:
    """Build the model's optimizer for its variables, laid out first (the
    optimizer's state takes their layouts), inside a `keras.StatelessScope`:
    no state is made."""
    import keras

    for variable in model.trainable_variables + model.non_trainable_variables:
        layout(variable)
    optimizer = model.optimizer
    if not optimizer.built:
        with keras.StatelessScope(initialize_variables=False), _values_deferred():
            optimizer.build(model.trainable_variables)


@contextlib.contextmanager
def _values_deferred():
    """Keras's Adafactor makes its placeholders for vectors from the value 0,
    which a StatelessScope refuses: for its `build`, they are made from an
    initializer instead, deferred like the rest of its state. Its module
    alone sees the change."""
    import keras
    from keras.src.optimizers import adafactor as keras_adafactor

    backend = keras_adafactor.backend

    def deferred(initializer, *args, **kwargs):
        if not callable(initializer):
            value = np.asarray(initializer)
            kwargs.setdefault("shape", value.shape)
            kwargs.setdefault("dtype", "int32" if value.dtype.kind in "iu" else None)
            initializer = keras.initializers.Constant(value)
        return backend.Variable(initializer, *args, **kwargs)

    class Deferring:
        Variable = staticmethod(deferred)

        def __getattr__(self, name):
            return getattr(backend, name)

    keras_adafactor.backend = Deferring()
    try:
        yield
    finally:
        keras_adafactor.backend = backend


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
    temporaries = compiled.memory_analysis().temp_size_in_bytes
    return StepFigures(peak_bytes(compiled), temporaries, _bytes_accessed(compiled, compiler))


def peak_bytes(compiled) -> int:
    """What one device holds at `compiled`'s peak: its arguments and outputs
    (less the donated arguments the outputs reuse) and its temporaries."""
    memory = compiled.memory_analysis()
    return (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )


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
