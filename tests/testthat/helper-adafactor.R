# reticulate 1.28 takes any pyproject.toml it finds at the project root (ours
# describes the Python package) for a Poetry project and warns; look elsewhere.
options(reticulate.poetry.project = tempdir())

# The tests need the Python side; without it they skip and say why.
skip_without_python <- function() {
  skip_if_not(adafactor_available(),
              "the Python package 'adafactor' is not available: install_adafactor()")
}

# The Python module's rule for an argument, in the words both languages use.
accepted <- function(argument) {
  reticulate::import("adafactor")$accepted(argument)
}

# Run R code in a fresh R process; returns its output and exit status.
run_r <- function(code, env = character()) {
  rscript <- file.path(R.home("bin"), "Rscript")
  output <- suppressWarnings(system2(rscript, c("-e", shQuote(code)),
                                     stdout = TRUE, stderr = TRUE, env = env))
  list(output = paste(output, collapse = "\n"),
       status = attr(output, "status") %||% 0L)
}

`%||%` <- function(x, y) if (is.null(x)) y else x

# Evaluate `code` with `dir` as the working directory.
withr_local_dir <- function(dir, code) {
  old <- setwd(dir)
  on.exit(setwd(old))
  force(code)
}
