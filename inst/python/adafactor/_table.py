"""The reports' rows, as R reads them and as a person reads them."""

from __future__ import annotations


class Report(list):
    """Rows (dicts) that print as a table."""

    def rows(self) -> list[dict]:
        """The rows as plain dicts, what R's `adafactor_memory()` reads: the
        bytes as floats (reticulate wraps a Python int past R's integers,
        2^31, around)."""
        return [
            {
                key: float(value) if key.endswith("_bytes") and value is not None else value
                for key, value in row.items()
            }
            for row in self
        ]


def table(lines: list[tuple[str, ...]]) -> str:
    """Lines of cells as text, each column right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(value.rjust(width) for value, width in zip(line, widths, strict=True))
        for line in lines
    )
