"""The two packages describe one release: the same version, the same floors,
and no exact pins in what a user installs."""

import re

import tomllib

import adafactor
from conftest import ROOT


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def description():
    return (ROOT / "DESCRIPTION").read_text()


def test_r_and_python_versions_agree():
    version = re.search(r"^Version: (\S+)$", description(), re.M).group(1)
    assert version == adafactor.__version__


def test_dependencies_are_ranges_without_a_backend():
    project = pyproject()
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    assert not [r for r in requirements if "==" in r]
    names = {re.split(r"[<>=!~\[]", r)[0] for r in project["dependencies"]}
    assert names == {"keras", "numpy"}


def test_the_r_package_states_the_python_keras_floor():
    floor = next(r for r in pyproject()["dependencies"] if r.startswith("keras"))
    stated = re.search(r"'keras' \((>= [\d.]+)\)", description()).group(1)
    assert floor == "keras" + stated.replace(" ", "")


def test_lowest_constraints_are_the_declared_floors():
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints" / "lowest.txt").read_text().splitlines()
        if "==" in line
    )
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    for requirement in pyproject()["dependencies"]:
        name, floor = requirement.split(">=")
        assert pins[name] == floor or pins[name].startswith(floor + "."), requirement
