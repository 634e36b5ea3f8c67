"""The two packages describe one release: the same version, the same floors,
and no exact pins in what a user installs."""

import re
from pathlib import Path

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


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    """The rule (`_rule.py`), the plans and the optimizer import in one
    direction only, imports inside functions included."""
    import ast

    package = Path(adafactor.__file__).parent
    imports = {}
    for source in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adafactor"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                found |= {n.removeprefix("adafactor.") for n in names if n != "adafactor"}
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("adafactor.") for a in node.names}
        imports[source.stem] = found & {s.stem for s in package.glob("*.py")} - {source.stem}
    assert set(imports["_rule"]) == set()  # the rule needs nothing of the package

    def reaches(start, goal, seen=()):
        return any(
            m == goal or (m not in seen and reaches(m, goal, (*seen, m))) for m in imports[start]
        )

    cycles = sorted(m for m in imports if m != "__init__" and reaches(m, m))
    assert cycles == []
