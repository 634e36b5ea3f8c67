"""JAX: the factored step as the platform it is lowered for wants it.

`factored_step` chooses when the step is lowered (`lax.platform_dependent`),
so the compiler of one platform never sees the other's form:

- **Elsewhere (GPU, TPU)**: the plain step, which XLA fuses and schedules for
  low peak memory itself, with the row-sum RMS form (fastest on an H200). A
  conditional there would cost a host round trip per matrix (XLA:GPU copies
  its predicate to the host and waits), and buy nothing.
- **The CPU**: each factored variable's step as one XLA operation. From
  jaxlib 0.5.1 XLA's CPU compiler orders a step's operations breadth first;
  backpropagation makes a layer's gradient every operation or two, and
  Adafactor's step after it is some fifteen small ones (the square, its row
  and column sums, the factors, the RMS, the clip). Laid out breadth first,
  every gradient of a stack of dense layers waits for its update, all alive
  at once. Inside a `lax.cond` (two identical branches) the step is one
  operation that runs as soon as its gradient exists. Measured
  (`bench/fit_peak.py`, 12 x Dense(4096), the peak of `fit()` above SGD's,
  2026-12-01; `bench/results/cpu_plan_by_jax.csv`): jaxlib 0.5.1 to 0.10.2,
  +0.09 to +0.16 x the parameters with the conditional, +0.96 to +1.22 x
  without; up to jaxlib 0.5.0 the plain step held less than SGD's (-0.72 x)
  and the conditional got in its way (-0.20 x): there it is not used
  (`CONDITIONAL_PAYS`). With `beta_1` the operation updates the factors and
  returns the scales, and the momentum and variable are updated after it,
  in place (a conditional's results cannot share its operands' buffers).

`Pipeline` lets at most `IN_FLIGHT` of these operations run at once, each
waiting for the one `IN_FLIGHT` places before it. In `fit()` the updates
then still keep pace with backpropagation; a step given every gradient at
once (`stateless_apply` alone) does not start every update together, each
with a copy of its variable.

XLA's compiler frees what it used into the C library's heap, which keeps it
(some 50 MiB more for a step with Adafactor's many small operations than for
SGD's, 12 x Dense(512)), and the step's first run allocates its buffers on
top. `release_after_compile` hands those free pages back (glibc's
`malloc_trim`) once XLA has compiled a step that traced this optimizer, when
JAX compiles for the CPU: `fit()`'s peak above SGD's +0.21 -> +0.12 x
(JAX 0.10.2), -0.17 -> -0.20 x (0.4.38).
"""

from __future__ import annotations

import ctypes
import functools
import re

import jax
import jaxlib
import keras

from adafactor import _rule

IN_FLIGHT = 6
# Whether XLA's CPU compiler needs the step as one operation (above).
CONDITIONAL_PAYS = tuple(map(int, re.findall(r"\d+", jaxlib.__version__)[:3])) >= (0, 5, 1)

# Set False to leave the C library's heap alone after compiling.
RELEASE_AFTER_COMPILE = True
# JAX's monitoring event at the end of each XLA compilation (jax >= 0.4).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Pipeline:
    """One step's operations on the CPU, at most `IN_FLIGHT` at once: each
    follows the one `IN_FLIGHT` places before it."""

    def __init__(self):
        self._done = []

    def waiting_for(self):
        """The flag of the operation the next one follows, or None."""
        return self._done[-IN_FLIGHT] if len(self._done) >= IN_FLIGHT else None

    def finished(self, done):
        self._done.append(done)


class InOrder:
    """One step's variables updated one after another, in the order given
    (backpropagation's), where the step is lowered for a GPU or a TPU: each
    variable's gradient is handed to its update only once the variable
    updated before it has its new value (`optimization_barrier`).

    XLA:TPU and XLA:GPU otherwise schedule the updates late, together,
    with several layers' gradients alive at once. Measured (fit()'s step per
    device above SGD's, x the parameters that device holds, compiled here;
    `bench/accelerator_memory.py`, 2026-12-07): 12 x Dense(4096) on XLA:TPU
    +0.18 -> +0.09 on one device, XLA:GPU +0.92 -> +0.14 under Megatron;
    keras_hub's Gemma under its layout map, XLA:TPU +0.91 -> +0.39, XLA:GPU
    +0.07 -> +0.01 (with `cut_step`). With the batch split across devices
    (`batch_split`: every gradient is summed across them) XLA:GPU holds
    less with the order (+0.00 -> -0.33), XLA:TPU more (+0.003 -> +0.09,
    bfloat16 weights +0.08 -> +0.26): there the TPU's updates are left to
    its scheduler. The CPU step orders its updates itself (`Pipeline`), and
    XLA:CPU ignores the barrier: there the gradient is passed on as it is."""

    def __init__(self, batch_split=False):
        self._last = None
        unordered = ("cpu", "tpu") if batch_split else ("cpu",)
        self._as_is = {platform: _as_is for platform in unordered}

    def gradient_of(self, variable, gradient):
        """`gradient`, after the last variable's update; `variable` is next."""
        last, self._last = self._last, variable
        if last is None or not isinstance(gradient, jax.core.Tracer):
            return gradient
        return jax.lax.platform_dependent(gradient, last.value, default=_after, **self._as_is)


def _as_is(gradient, value):
    """`gradient`, unordered."""
    return gradient


def _after(gradient, value):
    """`gradient` once `value` is computed."""
    return jax.lax.optimization_barrier((gradient, value))[0]


def factored_step(optimizer, state, gradient, variable, learning_rate, step, decay):
    """The step of a factored variable with a dense gradient, whole on every
    device, as the platform it is lowered for wants it (the module's
    docstring). On the CPU one operation (`as_one_operation`) in the
    optimizer's `Pipeline` where that pays, and the update's RMS as a
    matrix-vector product; elsewhere the plain step and the row-sum RMS
    form. (A variable cut across devices takes `cut_step`: the CPU's
    conditional would hold collectives.)"""
    forced, arguments = _plan_inputs(
        optimizer, state, gradient, variable, learning_rate, step, decay
    )
    with_momentum = state.momentum is not None
    # With beta_1 the operation updates the factors and returns the scales;
    # the momentum and the variable are updated after it, in place (a
    # conditional's results cannot share its operands' buffers).
    factors = [state.row, state.col]
    reads, writes = ([variable], factors) if with_momentum else ([], [variable, *factors])
    compute = optimizer.fused_factors if with_momentum else optimizer.whole_step
    pipeline = getattr(optimizer, "_pipeline", None)
    one_operation = CONDITIONAL_PAYS and pipeline is not None

    def on_cpu():
        form = forced or "matvec"
        if not one_operation:
            return compute(*arguments, form), None
        run = functools.partial(compute, form=form)
        return as_one_operation(run, arguments, reads, writes, step, pipeline.waiting_for())

    def elsewhere():
        return compute(*arguments, forced or "fused"), None

    result, done = by_platform(reads + writes, writes, step, elsewhere, cpu=on_cpu)
    if one_operation:
        pipeline.finished(done)
    if with_momentum:
        optimizer.apply_factors(state, gradient, result, variable)


def _plan_inputs(optimizer, state, gradient, variable, learning_rate, step, decay):
    """The RMS form the optimizer forces (None: the platform's), and the
    arguments every plan of a dense step takes, the learning rate read here,
    outside the platforms' branches."""
    forced = None if optimizer.rms_form == "auto" else optimizer.rms_form
    lr = keras.ops.convert_to_tensor(learning_rate)
    return forced, (state, gradient, variable, lr, step, decay)


def weighted_row_sums_by_platform(grad_square, col_norm):
    """`_rule.weighted_row_sums` in the form of the platform the step is
    lowered for: the matrix-vector product on the CPU, the row sum
    elsewhere (eagerly, JAX's default platform's)."""
    forms = {
        form: functools.partial(_rule.weighted_row_sums, form=form) for form in _rule.RMS_FORMS
    }
    if not isinstance(grad_square, jax.core.Tracer):
        return forms["matvec" if jax.default_backend() == "cpu" else "fused"](grad_square, col_norm)
    return jax.lax.platform_dependent(
        grad_square, col_norm, cpu=forms["matvec"], default=forms["fused"]
    )


def by_platform(variables, writes, clock, elsewhere, **platforms):
    """`platforms[name]()` where the step is lowered for the platform `name`
    (JAX's: "cpu", "cuda", "tpu"), `elsewhere()` where it is lowered for any
    other. Each may read the Keras variables in `variables` and assign those
    in `writes`, and returns its result and a flag (or None); their new
    values are assigned here. `clock` is a traced scalar (the step count).
    Eagerly, the platform of JAX's default device decides."""
    if not isinstance(clock, jax.core.Tracer):
        eager = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
        return platforms.get(eager, elsewhere)()

    def branch(run):
        def traced(values):
            state = list(zip(variables, values, strict=True))
            with keras.StatelessScope(state_mapping=state) as scope:
                result, done = run()
            new_values = [scope.get_current_value(variable) for variable in writes]
            return result, new_values, jax.numpy.isfinite(clock) if done is None else done

        return traced

    branches = {name: branch(run) for name, run in platforms.items()}
    result, values, done = jax.lax.platform_dependent(
        [v.value for v in variables], default=branch(elsewhere), **branches
    )
    for variable, value in zip(writes, values, strict=True):
        variable.assign(value)
    return result, done


def cut_step(optimizer, state, gradient, variable, learning_rate, step, decay):
    """The step of a factored variable cut across devices, with a dense
    gradient. Where lowered for a GPU, the step written for XLA
    (`Adafactor.whole_step`: the clip, and a low-precision gradient's cast,
    made in each use of the gradient, no copy of it kept); elsewhere the
    generic step (`Adafactor.plain_step`). Neither is a conditional: its
    collectives stay outside any (XLA's CPU runtime does not order a
    conditional's collectives with the step's others; four CPU devices
    waited in different ones, tests/python/scale_out/jax_batch_on_model_axis.py).

    Measured (`bench/accelerator_memory.py`, per device above SGD's, x the
    parameters it holds; 2026-12-07): on XLA:GPU keras_hub's Gemma under its
    layout map +0.175 -> +0.012, 12 x Dense(4096) under Megatron +0.142 ->
    +0.135, and in bfloat16 the bytes moved 9.05 -> 6.55 x; on XLA:TPU the
    generic step holds and moves less (Megatron +0.022 against +0.029, 7.18
    against 8.03 x), as on the CPU (`make bench`).

    On a GPU the column sums of a float32 matrix take the square without
    the clip's finiteness test (`_rule.capped_square`): XLA:GPU's fusion
    cost model otherwise writes the square of a 4096 x 1024 slice out in
    full (76 against 35 microseconds, its `priority_fusion_dump.txt`), a
    second gradient-sized buffer. Megatron +0.135 -> +0.079, 5.54 -> 5.05 x
    moved; Gemma's matrices 5.96 -> 5.37 x moved, its rank-3 kernels held
    more with it (+0.012 -> +0.057), and bfloat16 weights (the cast one
    operation more) moved more (6.55 -> 7.05 x) and held the same."""
    forced, arguments = _plan_inputs(
        optimizer, state, gradient, variable, learning_rate, step, decay
    )
    writes = [v for v in (variable, state.row, state.col, state.momentum) if v is not None]

    # A float32 matrix's column sums take the capped square (measured, above).
    capped = len(variable.shape) == 2 and variable.dtype == "float32"

    def on_gpu():
        return optimizer.whole_step(*arguments, forced or "fused", capped_columns=capped), None

    def elsewhere():
        return optimizer.plain_step(*arguments), None

    by_platform(writes, writes, step, elsewhere, cuda=on_gpu)


def as_one_operation(compute, arguments, reads, writes, clock, wait=None):
    """`compute(*arguments)` as one operation of a traced step.

    `compute` may read the Keras variables in `reads` and `writes` (and no
    other) and assign those in `writes`; their new values are assigned here.
    The array arguments become the operation's operands. `clock` is a
    traced float scalar (the step count), whose value the compiler cannot
    know; `wait` a flag returned by an earlier operation,
    which this one then follows. Returns `compute`'s result and this
    operation's flag. Eagerly (nothing traced) `compute` simply runs."""
    if not isinstance(clock, jax.core.Tracer):
        return compute(*arguments), None
    variables = list(reads) + list(writes)
    is_array = [isinstance(a, jax.Array) for a in arguments]
    operands = [a for a, array in zip(arguments, is_array, strict=True) if array]

    def branch(operands, values, clock):
        given = iter(operands)
        full = [next(given) if array else a for a, array in zip(arguments, is_array, strict=True)]
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))) as scope:
            result = compute(*full)
        new_values = [scope.get_current_value(variable) for variable in writes]
        return result, new_values, jax.numpy.isfinite(clock)

    # Both branches are the same: the predicate need only be one the
    # compiler cannot decide (it inlines a conditional it can), and from
    # `wait` the operation follows that earlier one. (A cheaper other branch,
    # e.g. NaN, would keep a full-size result of its own.)
    predicate = jax.numpy.isfinite(clock) if wait is None else wait
    result, values, done = jax.lax.cond(
        predicate, branch, branch, operands, [v.value for v in variables], clock
    )
    for variable, value in zip(writes, values, strict=True):
        variable.assign(value)
    return result, done


def lowered_train_step(model, data, platforms=None):
    """A compiled Keras `model`'s train step on `data` (inputs, targets),
    lowered as `fit()` lowers it (keras/src/backend/jax/trainer.py:
    `jax.jit` of `train_step`, the state donated), for `platforms` (JAX's
    names, e.g. `("cuda",)`; None: the devices'): for what XLA makes of it
    (the tests and `make bench`)."""
    model.optimizer.build(model.trainable_variables)
    state = tuple(
        [v.value for v in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
    )
    traced = jax.jit(model.train_step, donate_argnums=0).trace(state, data)
    return traced.lower(lowering_platforms=platforms)


def compiled_train_step(model, data):
    """`lowered_train_step` compiled, for its memory (`memory_analysis()`)."""
    return lowered_train_step(model, data).compile()


class _Release:
    """Whether a traced step awaits its compilation, and whether the
    listener is registered (once a process)."""

    pending = False
    listening = False


def release_after_compile(arrays) -> None:
    """When `arrays` are traced (a step being compiled) and JAX compiles for
    the CPU, hand the heap's free pages back to the system after XLA's next
    compilation. Eagerly, on another platform, with `RELEASE_AFTER_COMPILE`
    False, or without glibc: nothing. (A trace does not know the platform
    it will be lowered for, and the trim is the host's: JAX's default
    platform, which `fit()` compiles for, decides.)"""
    if not RELEASE_AFTER_COMPILE or jax.default_backend() != "cpu" or _malloc_trim() is None:
        return
    if not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays)):
        return
    if not _Release.listening:
        jax.monitoring.register_event_duration_secs_listener(_after_event)
        _Release.listening = True
    _Release.pending = True


def _after_event(event, duration, **kwargs) -> None:
    if event == COMPILE_EVENT and _Release.pending:
        _Release.pending = False
        _malloc_trim()(0)


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None (another C library)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:  # pragma: no cover - no C library to load
        return None
