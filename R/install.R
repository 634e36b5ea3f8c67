#' Install the Python side of adafactor
#'
#' Creates (or updates) a Python virtual environment with the `adafactor`
#' Python package bundled in this R package and its pinned dependencies
#' (NumPy 1.26, TensorFlow, Keras 3), as `keras3::install_keras()` does. It
#' needs only the installed R package and access to PyPI. `library(adafactor)`
#' then finds the environment in later R sessions; `RETICULATE_PYTHON` still
#' overrides it.
#'
#' @param envname Name of (or path to) the virtual environment. The default,
#'   `"r-adafactor"`, is the one the package looks for.
#' @param extras Optional extras of the Python package to install as well:
#'   `"jax"` (the JAX backend), `"torch"` (the PyTorch backend), `"test"`.
#' @param python The Python used to create the environment, when it does not
#'   exist yet.
#' @returns The path to the environment's Python, invisibly.
#' @examples
#' \dontrun{
#' install_adafactor()
#' install_adafactor(extras = "jax")
#' }
#' @export
install_adafactor <- function(envname = "r-adafactor", extras = character(),
                              python = Sys.which("python3")) {
  source <- bundled_python_source()
  path <- virtualenv_location(envname)
  if (is.null(adafactor_env_python(envname))) {
    run_outside_r(python, c("-m", "venv", path))
  }
  env_python <- adafactor_env_python(envname)
  spec <- source
  if (length(extras) > 0L) {
    spec <- sprintf("%s[%s]", source, paste(extras, collapse = ","))
  }
  run_outside_r(env_python, c("-m", "pip", "install", "--disable-pip-version-check", spec))
  message("Installed the Python side of adafactor into '", path, "'. ",
          "Restart R to use it.")
  invisible(env_python)
}

# A path stays a path; a name lives in reticulate's virtualenv root
# (WORKON_HOME, else ~/.virtualenvs), where library(adafactor) looks.
virtualenv_location <- function(envname) {
  if (grepl("/", envname, fixed = TRUE)) {
    return(path.expand(envname))
  }
  file.path(reticulate::virtualenv_root(), envname)
}

# Run a command without R's LD_LIBRARY_PATH: R puts system library folders on
# it, and a Python started under it can load another build's libpython (a
# pyenv Python then gets Debian's and loses its ssl module, so pip fails).
run_outside_r <- function(command, args) {
  status <- system2(command, shQuote(args), env = "LD_LIBRARY_PATH=")
  if (!identical(status, 0L)) {
    adafactor_stop(sprintf("`%s %s` failed with status %s.", command,
                           paste(args, collapse = " "), status))
  }
}

# A writable copy of the Python sources shipped in inst/python: pip writes
# build files next to a local project, and the R library may be read-only.
bundled_python_source <- function() {
  shipped <- system.file("python", "pyproject.toml", package = "adafactor")
  if (!nzchar(shipped)) {
    stop("This installation of the R package 'adafactor' lacks its bundled ",
         "Python sources (inst/python); reinstall it from the built tarball.",
         call. = FALSE)
  }
  staging <- tempfile("adafactor-python-")
  dir.create(staging)
  file.copy(list.files(dirname(shipped), full.names = TRUE), staging,
            recursive = TRUE)
  staging
}
