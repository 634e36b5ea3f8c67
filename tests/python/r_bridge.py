"""R in this Python process through rpy2, with reticulate attached to it.

Why a bridge: rpy2 calls R through cffi, which releases the GIL, and
reticulate 1.28 drops its references to Python objects from R's garbage
collector without taking the GIL (`python_object_finalize` calls `Py_DecRef`).
When R collects such a reference while the GIL is released and the object
dies, Python aborts ("Fatal Python error: PyThreadState_Get", exit 134): at
any R garbage collection during an rpy2 call, and every time in rpy2's exit
handler, which runs R's garbage collector before shutting R down.

So the R code of the tests is called through rpy2 but runs inside a call
from Python into R made by reticulate, which holds the GIL: rpy2 calls the R
function `.adafactor_gil(code)`, which calls `run()` below through
reticulate; `run()` evaluates the code in R and then runs R's garbage
collector, still holding the GIL. No reference to a Python object is left to
R when the call returns, so R's exit-time collection has nothing to release
and the process exits 0.

Ending R at exit is left out: with reticulate 1.46 and keras3 loaded,
rpy2's exit handler hangs in R's exit finalizers (`R_RunExitFinalizers`, with
Python itself shutting down around it). The bridge removes R's temporary
folder instead, and the process exits without R's own clean-up.
"""

from __future__ import annotations

import atexit
import sys
import types

import rpy2.rinterface as rinterface
import rpy2.robjects as robjects

_NAME = "adafactor_r_bridge"
_bridge = types.ModuleType(_NAME)
_bridge.result = None


def _run(code: str) -> None:
    """Called from R through reticulate, holding the GIL."""
    try:
        _bridge.result = _bridge.evaluate(code)
    finally:
        _bridge.collect()


_bridge.run = _run
sys.modules[_NAME] = _bridge

robjects.r(f"""
options(reticulate.poetry.project = tempdir())
suppressPackageStartupMessages(library(adafactor))
local({{
  bridge <- reticulate::import("{_NAME}")
  bridge$evaluate <- function(code) {{
    eval(parse(text = code), envir = new.env(parent = globalenv()))
  }}
  bridge$collect <- function() invisible(gc())
}})
.adafactor_gil <- function(code) {{
  reticulate::import("{_NAME}")$run(code)
  invisible(NULL)
}}
""")
_gil_call = robjects.globalenv[".adafactor_gil"]
atexit.unregister(rinterface.endr)
atexit.register(lambda: r("unlink(tempdir(), recursive = TRUE)"))


def r(code: str):
    """Evaluate R code through rpy2; return its value as a Python object
    (R lists become dicts or lists, a Python object made in R is itself)."""
    _bridge.result = None
    _gil_call(code)
    result, _bridge.result = _bridge.result, None
    return result
