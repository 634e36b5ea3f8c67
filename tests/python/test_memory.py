"""`memory_report()`: the state each optimizer keeps, counted before any is
made, against the bytes of the state each one makes when it is built.
Marked `backend`: run under TensorFlow, JAX and PyTorch."""

import math
import re

import keras
import numpy as np
import pytest

from adafactor import ArgumentError, error_message, memory_report, optimizer_adafactor
from adafactor._targets import GPU_CARDS, target
from adafactor.memory import itemsize
from conftest import dense_stack

pytestmark = pytest.mark.backend


def embedding_model():
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(40, 12)(tokens)
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 3, 8))(x)  # rank-3 kernel
    x = keras.layers.Reshape((6, 24))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(2)(x))


def conv_model():
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3)(images)  # rank-4 kernel
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(130)(x))  # 16 x 130: > 128


MODELS = {"embedding_einsum": embedding_model, "conv2d": conv_model}

OPTIONS = {
    "defaults": {},
    "beta_1": {"beta_1": 0.9},
    "bfloat16 momentum": {"beta_1": 0.9, "momentum_dtype": "bfloat16"},
    "factored=False": {"factored": False},
    "min_dim_size_to_factor": {"min_dim_size_to_factor": 128},
    "ema and accumulation": {"use_ema": True, "gradient_accumulation_steps": 2},
}

KERAS = {
    "keras Adafactor": keras.optimizers.Adafactor,
    "Adam": keras.optimizers.Adam,
    "AdamW": keras.optimizers.AdamW,
    "SGD": keras.optimizers.SGD,
}


def built_state_bytes(optimizer, model):
    optimizer.build(model.trainable_variables)
    own = optimizer.variables[2:]  # after iterations and learning rate
    return sum(math.prod(v.shape) * itemsize(v.dtype) for v in own)


@pytest.fixture(params=["float32", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("name", MODELS)
def test_report_equals_the_bytes_each_optimizer_builds(name, policy):
    model = MODELS[name]()
    for options in OPTIONS.values():
        rows = {row["optimizer"]: row for row in memory_report(model, **options)}
        assert rows["adafactor"]["state_bytes"] == built_state_bytes(
            optimizer_adafactor(**options), model
        ), options
        # Keras's with their defaults and the same base arguments.
        base = {k: v for k, v in options.items() if k in ("use_ema", "gradient_accumulation_steps")}
        for label, make in KERAS.items():
            assert rows[label]["state_bytes"] == built_state_bytes(make(**base), model), label


def test_report_of_a_list_of_variables_in_bfloat16():
    variables = [
        keras.Variable(np.zeros((300, 200)), dtype="bfloat16"),
        keras.Variable(np.zeros((4, 5, 6)), dtype="float16"),
        keras.Variable(np.zeros(7), dtype="bfloat16"),
    ]
    rows = {row["optimizer"]: row for row in memory_report(variables, beta_1=0.5)}
    # Factors and vectors in float32 (the low-precision rule), a float32
    # momentum: counted by hand.
    state = 4 * (300 + 200 + 4 * 5 + 4 * 6 + 7) + 4 * (300 * 200 + 120 + 7)
    assert rows["adafactor"]["state_bytes"] == state
    parameters = 2 * 300 * 200 + 2 * 120 + 2 * 7
    assert rows["adafactor"]["times_parameters"] == pytest.approx(state / parameters)
    assert rows["Adam"]["state_bytes"] == 2 * parameters
    assert rows["adafactor"]["per_device_bytes"] is None  # no distribution
    assert rows["adafactor"]["parameter_bytes"] == rows["SGD"]["parameter_bytes"] == parameters
    assert rows["adafactor"]["total_bytes"] == parameters + state
    assert rows["SGD"]["total_bytes"] == parameters
    assert rows["adafactor"]["accumulator_bytes"] == 0
    # Gradient accumulators: a copy of each variable in its dtype, for
    # every optimizer (Keras's base optimizer keeps them).
    accumulated = {
        row["optimizer"]: row for row in memory_report(variables, gradient_accumulation_steps=4)
    }
    for name, row in accumulated.items():
        assert row["accumulator_bytes"] == parameters, name
        assert row["state_bytes"] == rows[name]["state_bytes"] + parameters - (
            4 * (300 * 200 + 120 + 7) if name == "adafactor" else 0
        ), name


def test_report_prints_as_a_table_and_validates_its_arguments():
    model = conv_model()
    table = str(memory_report(model))
    lines = table.splitlines()
    assert lines[0].split() == [
        "optimizer",
        "parameter_bytes",
        "state_bytes",
        "accumulator_bytes",
        "total_bytes",
        "times_parameters",
        "per_device_bytes",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["adafactor", "keras", "Adam", "AdamW", "SGD"]
    with pytest.raises(ValueError, match="`beta_1` must be"):
        memory_report(model, beta_1=2)
    with pytest.raises(ValueError, match="must be built"):
        memory_report(keras.Sequential([keras.layers.Dense(2)]))


TENSORFLOW_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's allocator statistics"
)


def tensorflow_graph_step_peak(optimizer, size=1024):
    """The peak of TensorFlow's CPU allocator over one step of `optimizer`
    in a graph (`tf.function` without XLA, as Keras runs `fit()` on a CPU)
    for one size x size variable, above what was allocated before, in
    variables' sizes. The gradient is made in the step, so that it is free
    after its last use, as backpropagation's is in `fit()`."""
    import tensorflow as tf

    variable = keras.Variable(np.zeros((size, size), "float32"))
    optimizer.build([variable])

    @tf.function
    def step(seed):
        gradient = tf.random.stateless_normal((size, size), seed)
        optimizer.apply([gradient], [variable])

    step(tf.constant([0, 1]))  # traced
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except ValueError:
        pytest.skip("this TensorFlow keeps no CPU allocator statistics")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(tf.constant([0, 2]))
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return (peak - before) / (size * size * 4)


@TENSORFLOW_ONLY
@pytest.mark.parametrize("options", [{}, {"beta_1": 0.9}], ids=["defaults", "beta_1"])
def test_tensorflows_graph_step_holds_the_gradient_alone(options):
    """SGD's step holds the gradient (1 x the variable); so does ours
    (`_tensorflow.py`): the generic step held 2.25 x (a clipped copy, a
    mask, the square), and a broadcast product grappler reorders 2 x."""
    sgd = tensorflow_graph_step_peak(keras.optimizers.SGD(0.01))
    ours = tensorflow_graph_step_peak(optimizer_adafactor(**options))
    assert sgd == pytest.approx(1.0, abs=0.05)
    assert ours <= sgd + 0.1


JAX_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="XLA's memory analysis of a JAX-compiled step"
)


def compiled_train_step(optimizer, width=512, layers=12, batch=64):
    """XLA's memory analysis of Keras's train step for a stack of dense
    layers, compiled as `fit()` compiles it on JAX; and the parameters'
    bytes."""
    from adafactor import _jax

    model, data = dense_stack(optimizer, width, layers, batch)
    compiled = _jax.compiled_train_step(model, data)
    parameters = sum(math.prod(v.shape) * 4 for v in model.trainable_variables)
    return compiled.memory_analysis(), parameters


def ancestors(operation):
    """Every operation `operation` waits for in its graph (inputs and
    control inputs, transitively)."""
    seen, stack = set(), [operation]
    while stack:
        current = stack.pop()
        for before in [t.op for t in current.inputs] + list(current.control_inputs):
            if before not in seen:
                seen.add(before)
                stack.append(before)
    return seen


@TENSORFLOW_ONLY
@pytest.mark.parametrize("momentum_dtype", ["float32", "bfloat16"])
def test_tensorflows_graph_step_reads_the_momentum_after_the_update(momentum_dtype):
    """The graph executor runs an operation as soon as its inputs exist: a
    momentum read that waits for nothing ran at the step's start, for every
    variable at once, each widened to float32 when stored in bfloat16
    (`fit()`'s peak +1.87 x, `make bench`). Every read of the momentum
    waits for the gradient."""
    import tensorflow as tf

    optimizer = optimizer_adafactor(beta_1=0.9, momentum_dtype=momentum_dtype)
    variable = keras.Variable(np.zeros((64, 32), "float32"))
    optimizer.build([variable])

    @tf.function
    def step(gradient):
        optimizer.apply([gradient], [variable])

    graph = step.get_concrete_function(tf.TensorSpec((64, 32), tf.float32)).graph
    handle = next(
        inner
        for outer, inner in graph.captures
        if outer is optimizer.state_of(variable).momentum.value.handle
    )
    reads = [
        op
        for op in graph.get_operations()
        if op.type == "ReadVariableOp" and op.inputs[0] is handle
    ]
    assert reads
    assert all(graph.inputs[0].op in ancestors(read) for read in reads)


@JAX_ONLY
@pytest.mark.parametrize(
    "options, allowed",
    [
        ({}, 0.1),
        ({"beta_1": 0.9}, 0.3),
        # The float32 momentum before it is stored rounded is a full-size
        # temporary: +0.20 x on JAX 0.10, +0.55 x with jaxlib 0.4.38's XLA
        # and the plain step (fit()'s peak there: +0.94 x with the plain
        # step and with the conditional alike, bench/fit_peak.py).
        ({"beta_1": 0.9, "momentum_dtype": "bfloat16"}, 0.6),
    ],
    ids=["defaults", "beta_1", "bfloat16 momentum"],
)
def test_fits_compiled_step_holds_about_sgds_temporaries(options, allowed):
    """In `fit()`'s compiled step each factored update is one operation
    (`_jax.py`), run as soon as its gradient exists: the temporaries (the
    gradients alive at once, above all) stay near SGD's, where the same
    math as separate operations holds every gradient at once (+0.84 x the
    parameters with JAX 0.10; +0.01 as one operation, +0.20 with beta_1,
    whose momentum is updated outside it). The older XLA of JAX 0.4.38
    schedules differently (there the separate operations hold less than
    SGD's): the bounds hold on both."""
    sgd, parameters = compiled_train_step(keras.optimizers.SGD(0.01))
    ours, _ = compiled_train_step(optimizer_adafactor(**options))
    above = (ours.temp_size_in_bytes - sgd.temp_size_in_bytes) / parameters
    assert above <= allowed


@JAX_ONLY
def test_under_data_parallel_the_compiled_step_holds_about_sgds_temporaries():
    """Under `DataParallel` (every variable whole on every device) the step
    is one operation too: its conditionals need no collective. (Before,
    any Keras distribution turned it off: +0.86 x the parameters per device,
    `make bench`.) Variables cut across devices still take separate
    operations: test_scale_out.py runs that case on four devices."""
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        sgd, parameters = compiled_train_step(keras.optimizers.SGD(0.01))
        ours, _ = compiled_train_step(optimizer_adafactor())
    finally:
        keras.distribution.set_distribution(None)
    assert (ours.temp_size_in_bytes - sgd.temp_size_in_bytes) / parameters <= 0.1


@JAX_ONLY
def test_a_step_given_every_gradient_starts_a_few_updates_at_once():
    """`stateless_apply` alone, every gradient given: the updates run at
    most 6 at a time (`_jax.IN_FLIGHT`; each holds a copy of its variable),
    not all twelve together (12 variables' temporaries: slower, and 1.5 x
    the parameters at the peak)."""
    import jax

    shapes = [(512, 512)] * 12
    optimizer = optimizer_adafactor()
    variables = [keras.Variable(np.ones(s, "float32")) for s in shapes]
    optimizer.build(variables)
    grads = [jax.numpy.ones(s) for s in shapes]
    step = jax.jit(optimizer.stateless_apply, donate_argnums=(0, 1, 2))
    compiled = step.lower(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables]
    ).compile()
    one_variable = 512 * 512 * 4
    assert compiled.memory_analysis().temp_size_in_bytes <= 7.5 * one_variable


@JAX_ONLY
def test_after_compiling_a_step_with_this_optimizer_the_free_heap_goes_back(monkeypatch):
    """XLA's compiler leaves its freed memory in the C library's heap (some
    50 MiB more for Adafactor's step than for SGD's); once it has compiled
    a step that traced this optimizer, `malloc_trim` hands it back, once per
    compilation, before the step first runs. Not for other optimizers'
    steps, nor eagerly, nor when switched off. (What it saves in `fit()`'s
    peak: `make bench`.)"""
    import platform

    from adafactor import _jax

    if platform.libc_ver()[0] == "glibc":  # the real one is found
        assert callable(_jax._malloc_trim())
    trims = []
    monkeypatch.setattr(_jax, "_malloc_trim", lambda: trims.append)
    monkeypatch.setattr(_jax._Release, "pending", False)  # from an earlier test's trace
    x = np.ones((32, 8), "float32")

    def fit(optimizer):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(8)])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, x, batch_size=16, epochs=2, verbose=0)  # one shape: one compilation
        return model

    fit(keras.optimizers.SGD(0.01))
    assert trims == []
    model = fit(optimizer_adafactor())
    assert trims == [0]
    model.optimizer.apply_gradients(  # eagerly: nothing compiled
        [(np.ones(v.shape, "float32"), v) for v in model.trainable_variables]
    )
    assert trims == [0] and not _jax._Release.pending
    monkeypatch.setattr(_jax, "RELEASE_AFTER_COMPILE", False)
    fit(optimizer_adafactor())
    assert trims == [0]


# With `compiled_for`: what is checked before anything is compiled, on every
# backend, and the errors where the compiler cannot be had (the compiles
# themselves: tests/accelerators).


def compiled_dense():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    model.compile(optimizer=optimizer_adafactor(), loss="mse")
    return model


BATCH = (np.zeros((4, 16), "float32"), np.zeros((4, 8), "float32"))


@pytest.mark.parametrize(
    "compiled_for,received",
    [
        ("Z100 x 4", "'Z100 x 4'"),
        ("H100 x 9", "'H100 x 9'"),  # more cards than a host has
        ("v5e 2x2x1", "'v5e 2x2x1'"),  # a v5e slice is two-dimensional
        ("v4 2x2x1", "'v4 2x2x1'"),  # not offered (the module says why)
        (4, "4"),
        ([], "[]"),
    ],
)
def test_a_bad_accelerator_name_says_what_is_accepted(compiled_for, received):
    expected = error_message("compiled_for", received)
    assert "'H100 x 4'" in expected and "'v5e 2x2'" in expected
    with pytest.raises(ArgumentError) as error:
        memory_report(compiled_dense(), batch=BATCH, compiled_for=compiled_for)
    assert str(error.value) == expected


def test_accelerator_names_are_read_as_people_write_them():
    assert target("h100x4") == target("H100 x 4")
    assert target("Z100 x 4") is None and target(4) is None
    assert target("V5E:2x2").name == "v5e 2x2"
    assert (target("A100 x 8").device_count, target("v5p 2x2x2").device_count) == (8, 8)
    assert target("v5e 1x1").device_memory_bytes == 16 * 2**30
    assert target("L4 x 1").device_memory_bytes == GPU_CARDS["L4"]["device_memory_size"]


@pytest.mark.parametrize(
    "batch,received",
    [
        (None, "None"),
        ("x", "'x'"),
        ((np.zeros((4, 16)), 1.0), "a part float 1.0"),
    ],
)
def test_a_bad_batch_says_what_is_accepted(batch, received):
    with pytest.raises(ArgumentError) as error:
        memory_report(compiled_dense(), batch=batch, compiled_for="H100 x 1")
    assert str(error.value) == error_message("batch", received)


@JAX_ONLY
def test_compiled_for_needs_a_compiled_model():
    """Its fit() step, loss included, is what is compiled. (On another
    backend the error is that compiled_for needs JAX, below.)"""
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    with pytest.raises(ArgumentError) as error:
        memory_report(model, batch=BATCH, compiled_for="H100 x 1")
    message = str(error.value)
    assert message.startswith("`model` must be a compiled Keras model with compiled_for")
    assert message.endswith("call compile(loss = ...) first. Received: model=Sequential")


def test_a_batch_without_compiled_for_is_an_error():
    with pytest.raises(ArgumentError, match="`batch` is read with compiled_for only"):
        memory_report(compiled_dense(), batch=BATCH)


def test_compiled_for_needs_jax_and_its_compilers_or_says_what_to_install():
    """This environment has neither libtpu nor JAX's CUDA plugin."""
    model = compiled_dense()
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="compiled_for compiles fit\\(\\)'s JAX step"):
            memory_report(model, batch=BATCH, compiled_for="v5e 2x2")
        return
    import jax

    for name, install in [
        ("v5e 2x2", f'pip install "jax[tpu]=={jax.__version__}"'),
        ("H100 x 4", f'pip install "jax-cuda12-plugin=={jax.__version__}"'),
    ]:
        with pytest.raises(ImportError, match=re.escape(install)):
            memory_report(model, batch=BATCH, compiled_for=name)
