"""Keras's own Adafactor tests (keras/src/optimizers/adafactor_test.py, shipped
in the keras wheel), run on this optimizer: tests no one here wrote.

Each test method runs as Keras wrote it, with its module's `Adafactor` name
pointing at ours while it runs. One expectation differs on purpose: Keras
applies the relative step min(learning_rate, 1 / sqrt(t)) even with
`relative_step=False`, which its documentation says turns it off; its golden
trajectory (relative_step=False, learning_rate 0.5) was computed so. Ours
follows the documentation, so from step 5 (1 / sqrt(5) < 0.5) ours moves
further; with `relative_step=True` it follows Keras's golden numbers.
"""

import pytest

from adafactor import Adafactor

pytestmark = pytest.mark.backend


def keras_suite():
    return pytest.importorskip(
        "keras.src.optimizers.adafactor_test",
        reason="this keras wheel does not ship its Adafactor tests",
    )


def keras_test_names():
    suite = keras_suite().AdafactorTest
    return sorted(name for name in dir(suite) if name.startswith("test_"))


def run_keras_test(monkeypatch, name, optimizer_class):
    module = keras_suite()
    monkeypatch.setattr(module, "Adafactor", optimizer_class)
    test_case = module.AdafactorTest(name)
    test_case.setUp()
    try:
        getattr(test_case, name)()
    finally:
        test_case.tearDown()


GOLDEN = "test_correctness_with_golden"


@pytest.mark.parametrize("name", sorted(set(keras_test_names()) - {GOLDEN}))
def test_keras_adafactor_suite(monkeypatch, name):
    run_keras_test(monkeypatch, name, Adafactor)


def test_keras_golden_trajectory_with_the_relative_step_keras_applies(monkeypatch):
    def with_relative_step(**kwargs):
        return Adafactor(**dict(kwargs, relative_step=True))

    run_keras_test(monkeypatch, GOLDEN, with_relative_step)


def test_keras_golden_trajectory_leaves_ours_where_relative_step_false_is_honoured(monkeypatch):
    # Steps 1-4 agree (1 / sqrt(t) >= 0.5); step 5 is the first to differ.
    with pytest.raises(AssertionError, match="Mismatched elements: 10 / 10"):
        run_keras_test(monkeypatch, GOLDEN, Adafactor)
