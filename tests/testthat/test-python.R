# Which Python: keras3 chooses, adafactor never does.

# In a fresh R session: `attach` (R code), then training a small model, then
# the Python in use and where the adafactor module came from.
python_report <- function(attach, env = character()) {
  run_r_value(paste(
    attach,
    "model <- keras_model_sequential(input_shape = 4) |> layer_dense(3)",
    "model |> compile(optimizer = optimizer_adafactor(), loss = 'mse')",
    "history <- model |> fit(matrix(1, 8, 4), matrix(0, 8, 3), epochs = 2, verbose = 0)",
    "config <- reticulate::py_config()",
    paste("saveRDS(list(python = config$python, ephemeral = isTRUE(config$ephemeral),",
          "loss = history$metrics$loss, module = adafactor:::python_module()$`__file__`,",
          "optimizer = class(model$optimizer)[[1]]), OUT)"),
    sep = "; "), env = env)
}

shipped_module <- function() {
  normalizePath(system.file("python", "adafactor", "__init__.py", package = "adafactor"))
}

test_that("library(adafactor) starts no Python and sets no Python", {
  result <- run_r_value(paste(
    "library(adafactor)",
    paste("saveRDS(list(started = reticulate::py_available(),",
          "chosen = Sys.getenv('RETICULATE_PYTHON')), OUT)"), sep = "; "))
  expect_false(result$started)
  expect_identical(result$chosen, "")
})

test_that("with keras3's own py_require() environment, both attach orders train", {
  skip_without_python()
  skip_if(nzchar(Sys.getenv("RETICULATE_PYTHON")), "RETICULATE_PYTHON is set")
  for (attach in c("library(keras3); library(adafactor)",
                   "library(adafactor); library(keras3)")) {
    report <- python_report(attach)
    expect_true(report$ephemeral, label = attach) # keras3's py_require() environment
    expect_identical(report$optimizer, "adafactor.optimizer.Adafactor")
    expect_true(all(is.finite(report$loss)))
    # Nothing installed but the R package: the module is the one it ships.
    expect_identical(normalizePath(report$module), shipped_module())
  }
})

test_that("a Python the user chose stays chosen", {
  python <- other_python()
  for (attach in c("library(keras3); library(adafactor)",
                   "library(adafactor); library(keras3)")) {
    report <- python_report(attach, env = paste0("RETICULATE_PYTHON=", python))
    expect_identical(report$python, python, label = attach)
    expect_false(report$ephemeral)
    expect_identical(report$optimizer, "adafactor.optimizer.Adafactor")
  }
  chosen_later <- python_report(
    sprintf("library(adafactor); reticulate::use_python('%s')", python))
  expect_identical(chosen_later$python, python)
})

test_that("a Python without Keras is a clear error, and R survives it", {
  home <- tempfile("no-keras-")
  status <- system2(Sys.which("python3"), c("-m", "venv", home))
  skip_if(status != 0L, "python3 -m venv is not available")
  result <- run_r(paste(
    "library(adafactor)",
    "cat('available:', adafactor_available(), '\\n')",
    "e <- tryCatch(optimizer_adafactor(), error = identity)",
    "cat(class(e)[[1]], conditionMessage(e), '\\n')",
    "cat('still alive\\n')", sep = "; "),
    env = paste0("RETICULATE_PYTHON=", file.path(home, "bin", "python")))
  expect_match(result$output, "available: FALSE", fixed = TRUE)
  expect_match(result$output, "adafactor_error The Python module 'adafactor'", fixed = TRUE)
  expect_match(result$output, "Keras 3", fixed = TRUE)
  expect_match(result$output, "still alive", fixed = TRUE)
})

test_that("a shipped module that fails to import fails the tests, never skips them", {
  skip_without_python()
  # A module that cannot be imported into a Python that has Keras.
  real_import <- import_adafactor
  imported <- get("imported", envir = asNamespace("adafactor"))
  saved <- imported$module
  on.exit({
    assignInNamespace("import_adafactor", real_import, "adafactor")
    imported$module <- saved
  })
  assignInNamespace("import_adafactor", function() {
    imported$error <- "ImportError: a planted defect"
    NULL
  }, "adafactor")
  outcome <- tryCatch(skip_without_python(), skip = function(s) s,
                      error = function(e) e)
  expect_false(inherits(outcome, "skip"))
  expect_s3_class(outcome, "adafactor_error")
  expect_match(conditionMessage(outcome), "ImportError: a planted defect", fixed = TRUE)
})

test_that("a package installed without its Python module says so, not that Python is wrong", {
  real_sources <- python_sources
  on.exit(assignInNamespace("python_sources", real_sources, "adafactor"))
  assignInNamespace("python_sources", function() "", "adafactor")
  error <- tryCatch(optimizer_adafactor(), error = identity)
  expect_s3_class(error, "adafactor_error")
  expect_match(conditionMessage(error),
               "The adafactor R package is incomplete: its Python module", fixed = TRUE)
  expect_match(conditionMessage(error), find.package("adafactor"), fixed = TRUE)
  expect_match(conditionMessage(error),
               paste0("adafactor_", getNamespaceVersion("adafactor"), ".tar.gz"), fixed = TRUE)
  expect_no_match(conditionMessage(error), "Keras 3 and NumPy", fixed = TRUE)
})
