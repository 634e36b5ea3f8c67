"""Row-sparse gradients (TensorFlow's IndexedSlices, JAX's BCOO): Keras's own
sparse-optimizer suite, run on this optimizer's cases, and our own checks of
the dense result and of the rows a sparse update touches.

Keras's torch backend makes no sparse gradients (`SUPPORTS_SPARSE_TENSORS`
is False there), so these tests skip on it and name why."""

import keras
import numpy as np
import pytest

from adafactor import Adafactor, optimizer_adafactor

pytestmark = [
    pytest.mark.backend,
    pytest.mark.skipif(
        not keras.src.backend.SUPPORTS_SPARSE_TENSORS,
        reason="this Keras backend makes no sparse gradients",
    ),
]


# -- Keras's suite: keras/src/optimizers/optimizer_sparse_test.py -----------


def keras_suite():
    return pytest.importorskip(
        "keras.src.optimizers.optimizer_sparse_test",
        reason="this keras wheel does not ship its sparse-optimizer suite",
    )


def keras_adafactor_case():
    """Keras's own Adafactor case (its init_kwargs and expectations)."""
    cases = keras_suite().TEST_CASES
    return next(c for c in cases if c["testcase_name"] == "adafactor")


def our_cases():
    """Keras's Adafactor case with this optimizer in place of Keras's, and
    the variants whose expectations differ: without momentum the model
    variable gets a sparse update; with beta_1 a dense one (every row moves
    with its momentum). The optimizer's own state is never updated sparsely:
    it decays in every row, as with the dense gradient."""
    keras_case = keras_adafactor_case()
    kwargs = keras_case.get("init_kwargs", {})
    base = {
        "expect_model_sparse_variable_updates": keras_case["expect_model_sparse_variable_updates"]
    }
    return {
        "class": dict(base, optimizer_class=lambda: Adafactor(**kwargs)),
        "factory": dict(base, optimizer_class=lambda: optimizer_adafactor(**kwargs)),
        "unfactored": dict(
            base, optimizer_class=lambda: optimizer_adafactor(factored=False, **kwargs)
        ),
        "beta_1": dict(
            expect_model_sparse_variable_updates=False,
            optimizer_class=lambda: optimizer_adafactor(beta_1=0.9, **kwargs),
        ),
    }


def keras_test(name):
    """Keras's test function itself, unwrapped from its parametrization."""
    suite = keras_suite().OptimizerSparseTest
    method = getattr(suite, f"{name}_adafactor").__wrapped__
    return suite(f"{name}_adafactor"), method


@pytest.mark.parametrize("case", ["class", "factory", "unfactored", "beta_1"])
@pytest.mark.parametrize("name", ["test_sparse_gradients", "test_sparse_correctness"])
def test_keras_sparse_suite(name, case):
    test_case, method = keras_test(name)
    method(test_case, **our_cases()[case])


def test_keras_expects_a_sparse_model_update_from_adafactor():
    # What our default case inherits; if Keras changes it, look again.
    assert keras_adafactor_case()["expect_model_sparse_variable_updates"]


# -- our checks -------------------------------------------------------------


def row_sparse(values, indices, shape):
    """A row-sparse gradient of this backend (repeated indices allowed)."""
    values = np.asarray(values, "float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.IndexedSlices(
            tf.constant(values), tf.constant(indices, tf.int64), tf.constant(shape, tf.int64)
        )
    from jax.experimental import sparse

    return sparse.BCOO((values, np.asarray(indices)[:, None]), shape=shape)


def dense(values, indices, shape):
    out = np.zeros(shape, "float32")
    np.add.at(out, np.asarray(indices), np.asarray(values, "float32"))
    return out


def train(optimizer, shape, batches, sparse):
    variable = keras.Variable(np.random.default_rng(0).normal(size=shape).astype("float32"))
    for values, indices in batches:
        grad = (row_sparse if sparse else dense)(values, indices, shape)
        optimizer.apply([grad], [variable])
    return keras.ops.convert_to_numpy(variable)


def batches(shape, steps=6, seed=3):
    """Lookups with repeated rows and rows never looked up."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        indices = rng.integers(0, shape[0] - 2, size=5)
        indices[1] = indices[0]  # a repeated lookup
        out.append((rng.normal(size=(5,) + shape[1:]), indices))
    return out


OPTIONS = {
    "default": {},
    "t5": {"learning_rate": 1e-2, "relative_step": False, "scale_parameter": False},
    "unfactored": {"factored": False},
    "beta_1": {"beta_1": 0.9},
    "clipped": {"clip_threshold": 0.05},
}


@pytest.mark.parametrize("shape", [(11,), (12, 4), (9, 3, 4)])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_sparse_gradient_gives_the_dense_result(shape, option):
    steps = batches(shape)
    got = train(optimizer_adafactor(**OPTIONS[option]), shape, steps, sparse=True)
    want = train(optimizer_adafactor(**OPTIONS[option]), shape, steps, sparse=False)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("option", ["default", "unfactored", "t5"])
def test_only_the_rows_looked_up_change(option):
    shape = (20, 6)
    before = train(optimizer_adafactor(**OPTIONS[option]), shape, [], sparse=True)
    values = np.ones((3, 6))
    after = train(optimizer_adafactor(**OPTIONS[option]), shape, [(values, [2, 7, 2])], sparse=True)
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [2, 7]


def test_momentum_moves_rows_not_looked_up():
    shape = (20, 6)
    steps = [(np.ones((2, 6)), [2, 7]), (np.ones((1, 6)), [3])]
    once = train(optimizer_adafactor(beta_1=0.9), shape, steps[:1], sparse=True)
    twice = train(optimizer_adafactor(beta_1=0.9), shape, steps, sparse=True)
    assert np.all(twice[[2, 7]] != once[[2, 7]])  # momentum, not in batch 2


def test_an_element_sparse_gradient_gives_the_dense_result():
    # Not row-sparse (each entry its own index): handled as the dense gradient.
    if keras.backend.backend() != "jax":
        pytest.skip("only JAX has element-sparse gradients (BCOO); TensorFlow's are rows")
    from jax.experimental import sparse

    dense_grad = np.zeros((6, 4), "float32")
    dense_grad[1, 2], dense_grad[4, 0] = 0.5, -2.0
    element_sparse = sparse.BCOO.fromdense(dense_grad)
    assert element_sparse.n_sparse == 2
    shape = dense_grad.shape
    got = keras.Variable(np.ones(shape, "float32"))
    want = keras.Variable(np.ones(shape, "float32"))
    optimizer_adafactor().apply([element_sparse], [got])
    optimizer_adafactor().apply([dense_grad], [want])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want))
