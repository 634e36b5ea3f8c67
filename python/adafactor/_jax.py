"""JAX: each factored variable's step as one XLA operation.

XLA's CPU compiler orders a step's operations breadth first (its default
"concurrency optimised" scheduler, XLA's `BFSMemoryScheduler`: each
operation in the order it becomes ready). Backpropagation makes a layer's
gradient every operation or two; Adafactor's factored step after it is a
chain of some fifteen small ones (the gradient's square, its row and column
sums, the factors, the update's RMS, the clip). Laid out breadth first, each
gradient waits about fifteen layers for its update: in a stack of dense
layers every gradient is alive at once, and the peak of `fit()` rises by
their size, where SGD's one-operation update frees each gradient as soon as
it is made.

Inside a `lax.cond` the chain is one operation: it runs as soon as its
gradient exists and holds the gradient's square only while it runs. Without
`beta_1` it also writes the variable. With `beta_1` it returns a row and a
column scale, and the momentum and variable are updated outside it, in place
(a conditional's results cannot share its operands' buffers: a momentum
written inside would be copied out).

`Pipeline` lets at most `IN_FLIGHT` of these operations run at once, each
waiting for the one `IN_FLIGHT` places before it. In `fit()` the updates
then still keep pace with backpropagation; a step given every gradient at
once (`stateless_apply` alone, `make bench`) does not start every update
together, each with a copy of its variable: measured, 12 x Dense(4096):
none and 6 in flight leave the same temporaries in Keras's compiled train
step; 4 layers of a transformer's matrices: a step 2.7 x Adam's time with
none, 1.2 x with 6, 1.1 x with 2 (where `fit()` holds more).

XLA's compiler frees what it used into the C library's heap, which keeps it:
for a step with Adafactor's many small operations some 50 MiB more than for
SGD's (12 x Dense(512), measured; Keras's Adafactor alike). The step's first
run then allocates its buffers on top of that. `release_after_compile`
hands those free pages back (glibc's `malloc_trim`) once XLA has compiled a
step that traced this optimizer: in `fit()` of 12 x Dense(4096) the peak
fell by about 60 MiB (0.08 x the parameters).
"""

from __future__ import annotations

import ctypes
import functools

import jax
import keras

IN_FLIGHT = 6

# Set False to leave the C library's heap alone after compiling.
RELEASE_AFTER_COMPILE = True
# JAX's monitoring event at the end of each XLA compilation (jax >= 0.4).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Pipeline:
    """One step's operations, at most `IN_FLIGHT` at once."""

    def __init__(self):
        self._done = []

    def run(self, compute, arguments, reads, writes, clock):
        """`as_one_operation`, waiting for the operation `IN_FLIGHT` before."""
        wait = self._done[-IN_FLIGHT] if len(self._done) >= IN_FLIGHT else None
        result, done = as_one_operation(compute, arguments, reads, writes, clock, wait)
        self._done.append(done)
        return result


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


def compiled_train_step(model, data):
    """A compiled Keras `model`'s train step on `data` (inputs, targets),
    compiled as `fit()` compiles it (keras/src/backend/jax/trainer.py:
    `jax.jit` of `train_step`, the state donated): for measuring its memory
    (`memory_analysis()`; the tests and `make bench`)."""
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
    return jax.jit(model.train_step, donate_argnums=0).lower(state, data).compile()


class _Release:
    """Whether a traced step awaits its compilation, and whether the
    listener is registered (once a process)."""

    pending = False
    listening = False


def release_after_compile(arrays) -> None:
    """When `arrays` are traced (a step being compiled), hand the heap's
    free pages back to the system after XLA's next compilation. Eagerly,
    with `RELEASE_AFTER_COMPILE` False, or without glibc: nothing."""
    if not RELEASE_AFTER_COMPILE or _malloc_trim() is None:
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
