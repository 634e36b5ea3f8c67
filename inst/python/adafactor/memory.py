"""What each optimizer would keep for a model, before training.

`memory_report(model, **arguments)` counts, from the variables' shapes,
dtypes and layouts alone (no state is created), the bytes of optimizer state
this optimizer with `arguments` keeps, beside Keras's Adafactor, Adam, AdamW
and SGD with their defaults (and the same Keras base arguments `use_ema` and
`gradient_accumulation_steps`). The state is what the optimizer adds for the
model's trainable variables (its `variables` after `build()`, less its two
scalars, the iteration count and the learning rate): Keras's moving average
of the weights and its gradient accumulators included, when asked for. The
parameters are shown beside it, and their sum, what training holds
before the step's gradients and activations. Under a Keras distribution,
also the state's bytes each device holds, from the layouts.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import keras

from adafactor._arguments import ArgumentError
from adafactor._table import Report, table
from adafactor.optimizer import Adafactor

if TYPE_CHECKING:
    from adafactor._compiled_report import CompiledReport

# Keras's optimizers, by what they keep for a variable, in its dtype and
# laid out as it is (their `add_variable_from_reference`). Keras 3.15's
# Adafactor adds row and column factors for rank >= 2, created without a
# layout (replicated under a distribution), and two scalar placeholders for
# rank < 2.
KERAS_OPTIMIZERS = ("keras Adafactor", "Adam", "AdamW", "SGD")
_KERAS_CLASSES = (
    keras.optimizers.Adafactor,
    keras.optimizers.Adam,
    keras.optimizers.AdamW,
    keras.optimizers.SGD,
)
_FULL_SIZE_COPIES = {"keras Adafactor": 1, "Adam": 2, "AdamW": 2, "SGD": 0}


class MemoryReport(Report):
    """Rows (dicts) of `memory_report()`; prints as a table."""

    COLUMNS = (
        "optimizer",
        "parameter_bytes",
        "state_bytes",
        "accumulator_bytes",
        "total_bytes",
        "times_parameters",
        "per_device_bytes",
    )

    def __str__(self) -> str:
        return table([self.COLUMNS] + [tuple(_cell(row[c]) for c in self.COLUMNS) for row in self])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def itemsize(dtype) -> int:
    """Bytes a number of `dtype` takes ("bfloat16" 2, "int64" 8, "bool" 1)."""
    name = keras.backend.standardize_dtype(dtype)
    bits = re.search(r"\d+", name)
    return int(bits.group()) // 8 if bits else 1


def _shard_shape(shape, layout) -> tuple:
    """The shape each device holds of a tensor of `shape` laid out as
    `layout` (a Keras `TensorLayout`, a JAX sharding, or None: replicated)."""
    if layout is None:
        return tuple(shape)
    if isinstance(layout, keras.distribution.TensorLayout):
        mesh = layout.device_mesh
        sizes = dict(zip(mesh.axis_names, mesh.shape, strict=True))
        return tuple(
            math.ceil(dim / (sizes[axis] if axis is not None else 1))
            for dim, axis in zip(shape, layout.axes, strict=True)
        )
    return tuple(layout.shard_shape(tuple(shape)))


def _bytes(shape, dtype, layout=None) -> tuple[int, int]:
    """(whole, per device) bytes of a tensor."""
    size = itemsize(dtype)
    return math.prod(shape) * size, math.prod(_shard_shape(shape, layout)) * size


def _variables(model_or_variables) -> list:
    """The variables, each laid out as the Keras distribution lays it out
    (a model built without its weights has not been laid out yet)."""
    from adafactor._compile import layout

    if isinstance(model_or_variables, keras.Model):
        if not model_or_variables.built:
            raise ValueError(
                "`model` must be built (give it an Input, or call it once) so that "
                "its variables have shapes."
            )
        variables = list(model_or_variables.trainable_variables)
    else:
        variables = list(model_or_variables)
    for variable in variables:
        layout(variable)
    return variables


def _ours(variables, optimizer: Adafactor) -> tuple[int, int]:
    whole = per_device = 0
    for variable in variables:
        for _, shape, dtype, layout in optimizer.state_specs(variable):
            w, d = _bytes(shape, dtype, layout)
            whole, per_device = whole + w, per_device + d
    return whole, per_device


def _copies(variables, count: int) -> tuple[int, int]:
    """(whole, per device) bytes of `count` copies of each variable, laid
    out as it is: Keras's base optimizer keeps its moving average
    (`use_ema`) and its gradient accumulators so, for every optimizer."""
    whole = per_device = 0
    for variable in variables:
        w, d = _bytes(tuple(variable.shape), variable.dtype, _layout(variable))
        whole, per_device = whole + count * w, per_device + count * d
    return whole, per_device


def _layout(variable):
    return getattr(variable, "_layout", None)


def _keras(variables, name: str) -> tuple[int, int]:
    whole = per_device = 0
    for variable in variables:
        if getattr(variable, "overwrite_with_gradient", False):
            continue
        shape, dtype = tuple(variable.shape), variable.dtype
        w, d = _bytes(shape, dtype, _layout(variable))
        whole += _FULL_SIZE_COPIES[name] * w
        per_device += _FULL_SIZE_COPIES[name] * d
        if name != "keras Adafactor":
            continue
        # Its factors; for rank < 2, two placeholder integers instead.
        if len(shape) >= 2:
            factors = [(shape[:-1], dtype), (shape[:-2] + shape[-1:], dtype)]
        else:
            factors = [((), "int32")] * 2
        for factor in factors:
            w, d = _bytes(*factor)
            whole, per_device = whole + w, per_device + d
    return whole, per_device


def memory_report(
    model_or_variables, *, batch=None, compiled_for=None, **arguments
) -> MemoryReport | CompiledReport:
    """The optimizer state each optimizer would keep, in bytes, exactly;
    with `compiled_for`, each device's peak in fit()'s step on the named
    accelerators, as their compilers report it, and whether it fits.

    Args:
        model_or_variables: a built Keras model (its trainable variables) or
            a list of variables; a compiled model with `compiled_for`.
        batch: with `compiled_for`, one batch as `fit()` takes it: `x`, or
            `(x, y)` or `(x, y, sample_weight)`, each an array or anything
            with a full `shape` and a `dtype` (`jax.ShapeDtypeStruct`), the
            batch size included.
        compiled_for: None, or one or more accelerators by name: a TPU slice
            ("v5e 2x2", "v5p 2x2x1", "v6e 1x1") or GPUs of a host
            ("H100 x 4", "A100 x 8", "L4 x 1", "T4 x 1"). The step is
            compiled, on this machine, by that accelerator's XLA (JAX's
            backend, with `jax[tpu]` or JAX's CUDA plugin installed; no
            accelerator needed), laid out by the Keras distribution set (on
            that many of its devices), or on one device without one.
        **arguments: `optimizer_adafactor()`'s arguments (`beta_1`,
            `momentum_dtype`, `factored`, `min_dim_size_to_factor`,
            `use_ema`, ...), validated as there.

    Returns:
        A `MemoryReport`: one row a optimizer ("adafactor", then Keras's
        Adafactor, Adam, AdamW and SGD with their defaults and the same
        `use_ema` and `gradient_accumulation_steps`), each a dict with
        `optimizer`, `parameter_bytes` (the trainable variables),
        `state_bytes` (all the optimizer builds for them),
        `accumulator_bytes` (of which gradient accumulators, a copy of each
        variable with `gradient_accumulation_steps`), `total_bytes`
        (parameters and state), `times_parameters` (the state over the
        parameters' bytes) and `per_device_bytes` (the state each device
        holds under a Keras distribution, from the variables' layouts; None
        without one). `print()` shows it as a table.

        With `compiled_for`, a `CompiledReport` instead: a row an
        accelerator and optimizer, the rows above with `compiled_for` (the
        accelerator's name), `devices` (those the step is laid out on),
        `per_device_peak_bytes` (arguments, outputs and temporaries of one
        device at the step's peak, from the compiler's buffer assignment:
        no allocator's fragmentation or runtime reserve),
        `device_memory_bytes` (one device's memory), `fits` (the peak
        within it) and `compiler_refused`: where the compiler refuses a step
        that cannot fit (XLA:TPU does), its message, the peak None and
        `fits` False.
    """
    from adafactor._compiled_report import compiled_report
    from adafactor.factory import optimizer_adafactor

    optimizer = optimizer_adafactor(**arguments)
    variables = _variables(model_or_variables)
    parameters = sum(_bytes(tuple(v.shape), v.dtype)[0] for v in variables)
    distributed = keras.distribution.distribution() is not None
    accumulators = _copies(variables, bool(optimizer.gradient_accumulation_steps))
    ema = _copies(variables, bool(optimizer.use_ema))
    counts = [("adafactor", _ours(variables, optimizer))]
    counts += [(name, _keras(variables, name)) for name in KERAS_OPTIMIZERS]
    rows = MemoryReport()
    for name, own in counts:
        whole, per_device = (a + b + c for a, b, c in zip(own, ema, accumulators, strict=True))
        rows.append(
            {
                "optimizer": name,
                "parameter_bytes": parameters,
                "state_bytes": whole,
                "accumulator_bytes": accumulators[0],
                "total_bytes": parameters + whole,
                "times_parameters": whole / parameters if parameters else 0.0,
                "per_device_bytes": per_device if distributed else None,
            }
        )
    if compiled_for is None:
        if batch is not None:
            raise ArgumentError(
                "`batch` is read with compiled_for only: name the accelerators the step is "
                "compiled for. Received: batch with compiled_for=None"
            )
        return rows
    keras_options = dict(
        use_ema=optimizer.use_ema, gradient_accumulation_steps=optimizer.gradient_accumulation_steps
    )
    makers = {"adafactor": lambda: optimizer_adafactor(**arguments)}
    for name, made in zip(KERAS_OPTIMIZERS, _KERAS_CLASSES, strict=True):
        makers[name] = lambda made=made: made(**keras_options)
    return compiled_report(model_or_variables, rows, makers, batch, compiled_for)
