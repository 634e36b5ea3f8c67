# The Python side: the module this R package ships (inst/python/adafactor),
# imported into whatever Python keras3 runs in, and Python errors turned into
# readable R errors.
#
# adafactor never chooses a Python: keras3 does (its py_require()
# environment, the one keras3::install_keras() made, RETICULATE_PYTHON, ...).
# The Python code needs keras and numpy only, which keras3 already requires,
# so the package declares nothing more with py_require().

# `module`: the Python module once imported; NULL before Python starts, or
# when the running Python cannot import it (then `error` says why). An
# environment, since hooks run after the namespace is locked.
imported <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  # Import as soon as Python imports keras (now, if it already has), so a
  # model saved with optimizer_adafactor() loads in a fresh session: the
  # import registers the Adafactor class with Keras. Tied to keras rather
  # than to Python's start, since the module imports keras itself, and a
  # Python without keras is then never touched. (nocov: .onLoad runs before
  # covr starts counting.)
  reticulate::py_register_load_hook("keras", import_adafactor) # nocov
}

# The folder holding the shipped Python package (the repository's
# inst/python), or "" where the installed package lacks it.
python_sources <- function() {
  module <- system.file("python", "adafactor", "__init__.py", package = "adafactor")
  if (nzchar(module)) dirname(dirname(module)) else ""
}

# Import the shipped module into the running Python; never an error here
# (this runs inside reticulate's keras load hook), the reason is kept instead.
import_adafactor <- function() {
  if (is.null(imported$module) && nzchar(python_sources())) {
    imported$module <- tryCatch(
      reticulate::import_from_path("adafactor", python_sources()),
      error = function(e) {
        imported$error <- python_error_message(e)
        NULL
      }
    )
  }
  invisible(imported$module)
}

# The Python module, starting Python if needed, or an R error that says what
# is missing and how to get it: the package's own files, or the Python.
python_module <- function() {
  if (!nzchar(python_sources())) {
    adafactor_stop(paste0(
      "The adafactor R package is incomplete: its Python module ",
      "(python/adafactor) is missing from ", find.package("adafactor"), ". ",
      "Reinstall the package from its repository or a source tarball ",
      "(remotes::install_github(), pak::pak(), or R CMD INSTALL of ",
      "adafactor_", getNamespaceVersion("adafactor"), ".tar.gz); ",
      "the Python keras3 uses is not at fault."
    ))
  }
  module <- import_adafactor()
  if (is.null(module)) {
    adafactor_stop(paste0(
      "The Python module 'adafactor' shipped with this R package cannot be ",
      "imported into the Python keras3 uses (", python_in_use(), "): ",
      imported$error, "\n",
      "That Python needs Keras 3 and NumPy: let keras3 make its ",
      "environment (unset RETICULATE_PYTHON), run keras3::install_keras(), ",
      "or install keras into the Python you chose."
    ))
  }
  module
}

python_in_use <- function() {
  tryCatch(reticulate::py_exe(), error = function(e) "none found")
}

#' Is the Python side of adafactor available?
#'
#' `TRUE` when the Python that keras3 uses (starting it if needed, as
#' keras3 does) can import the Python module shipped with this package,
#' that is, when it has keras and numpy; `FALSE` otherwise, without an error.
#'
#' @returns `TRUE` or `FALSE`.
#' @examplesIf interactive() || reticulate::py_available()
#' # Starts the Python keras3 uses, if it has not started yet:
#' adafactor_available()
#' @export
adafactor_available <- function() {
  !is.null(tryCatch(import_adafactor(), error = function(e) NULL))
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
  trimws(message) # nocov: reticulate puts the Python error's text in every condition it raises
}

adafactor_stop <- function(message) {
  stop(structure(
    class = c("adafactor_error", "error", "condition"),
    list(message = message, call = NULL)
  ))
}
