"""The Python API page of the site: every name in `adafactor.__all__`, its
signature and docstring, read from the sources with `ast` (nothing is
imported, so any Python 3.10+ builds it). Prints Markdown."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "inst" / "python" / "adafactor"
SECTIONS = ("Args:", "Returns:", "Reference:", "Raises:")


def definitions() -> dict[str, ast.AST]:
    """Top-level classes and functions of every module, by name."""
    found = {}
    for source in sorted(PACKAGE.glob("*.py")):
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                found.setdefault(node.name, node)
    return found


def exported() -> list[str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "__all__":
            return [element.value for element in node.value.elts]
    raise SystemExit("adafactor/__init__.py has no __all__")


def signature(node) -> str:
    function = node if isinstance(node, ast.FunctionDef) else init_of(node)
    if function is None:
        return ""
    arguments = ast.unparse(function.args)
    if isinstance(node, ast.ClassDef):
        arguments = arguments.removeprefix("self, ").removeprefix("self")
    return f"({arguments})"


def init_of(node):
    return next(
        (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
    )


def markdown(docstring: str) -> str:
    """A Google-style docstring as Markdown: its prose as paragraphs, each
    argument (`name: text`) an item of a list, other sections as prose."""
    out, section = [], None
    for line in docstring.splitlines():  # ast.get_docstring removed the indent
        if line.strip() in SECTIONS:
            section = line.strip()
            out += ["", f"**{section[:-1]}**", ""]
        elif section == "Args:" and line.startswith("    ") and not line.startswith("        "):
            name, _, text = line.strip().partition(": ")
            out.append(f"- `{name}`: {text}" if text else f"- {line.strip()}")
        elif section == "Args:" and line.startswith("        "):
            out[-1] += " " + line.strip()
        else:
            out.append(line.strip() if section else line)
    return "\n".join(out)


def main() -> None:
    found = definitions()
    for name in exported():
        node = found[name]
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        header = f"{kind} adafactor.{name}{signature(node)}"
        sys.stdout.write(f"\n## `{name}`\n\n```python\n{header}\n```\n\n")
        sys.stdout.write(markdown(ast.get_docstring(node) or "(no docstring)") + "\n")


if __name__ == "__main__":
    main()
