# The Python side: lazy import, discovery of the project's environment, and
# Python errors turned into readable R errors.

# The Python module, bound lazily by .onLoad so library(adafactor) works
# without Python.
adafactor_py <- NULL

# The virtual environment that install_adafactor() creates by default and
# `make` uses (R collates install.R before this file).
default_envname <- formals(install_adafactor)$envname

.onLoad <- function(libname, pkgname) {
  prefer_adafactor_python()
  adafactor_py <<- reticulate::import("adafactor", delay_load = TRUE)
}

# Point reticulate at the r-adafactor environment unless the user chose a
# Python (RETICULATE_PYTHON and friends keep precedence) or one is running.
prefer_adafactor_python <- function() {
  chosen <- Sys.getenv(c("RETICULATE_PYTHON", "RETICULATE_PYTHON_ENV"))
  if (any(nzchar(chosen)) || reticulate::py_available(initialize = FALSE)) {
    return(invisible(FALSE))
  }
  python <- adafactor_env_python(default_envname)
  if (is.null(python)) {
    return(invisible(FALSE))
  }
  reticulate::use_python(python, required = FALSE)
  invisible(TRUE)
}

# The python executable of a virtual environment, or NULL when it is absent.
adafactor_env_python <- function(envname) {
  python <- file.path(virtualenv_location(envname), "bin", "python")
  if (file.exists(python)) python else NULL
}

# The Python module, or an R error that says what is missing and how to get it.
python_module <- function() {
  if (!reticulate::py_module_available("adafactor")) {
    python <- if (reticulate::py_available(initialize = FALSE)) {
      reticulate::py_config()$python
    } else {
      "none found"
    }
    adafactor_stop(paste0(
      "The Python package 'adafactor' (with keras and tensorflow) is not ",
      "available to reticulate (Python: ", python, ").\n",
      "Install it with `adafactor::install_adafactor()` and restart R, ",
      "or point RETICULATE_PYTHON at a Python that has it."
    ))
  }
  adafactor_py
}

# Call a Python function; a Python exception becomes an R error of class
# `adafactor_error` carrying the Python message alone (no traceback dump).
call_python <- function(fun, args) {
  tryCatch(
    do.call(fun, args),
    error = function(e) adafactor_stop(python_error_message(e))
  )
}

python_error_message <- function(e) {
  message <- conditionMessage(e)
  last <- reticulate::py_last_error()
  if (!is.null(last) && grepl(last$value, message, fixed = TRUE)) {
    return(last$value)
  }
  trimws(message)
}

adafactor_stop <- function(message) {
  stop(structure(
    class = c("adafactor_error", "error", "condition"),
    list(message = message, call = NULL)
  ))
}
