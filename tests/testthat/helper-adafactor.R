# The checkout is also a Python project (pyproject.toml, .venv): reticulate
# would take it for a Poetry project and use its environment. A user's R
# session is not inside it; neither are these tests (fresh sessions run in a
# temporary folder, see run_r()).
options(reticulate.poetry.project = tempdir())

# The tests need a Python with Keras 3 for keras3 (its py_require()
# environment, made with uv, or keras3::install_keras()); without one they
# skip and say why. Where that Python has Keras but the shipped module does
# not import, the test fails with the import error: a broken module is a
# failure, never a skip.
skip_without_python <- function() {
  has_keras <- isTRUE(tryCatch(reticulate::py_module_available("keras"),
                               error = function(e) FALSE))
  skip_if_not(has_keras, paste(
    "no Python with Keras 3 for keras3 (uv for its py_require() environment,",
    "or keras3::install_keras())"))
  invisible(python_module())
}

# The Python module's rule for an argument, in the words both languages use.
accepted <- function(argument) {
  python_module()$accepted(argument)
}

# PATH before this session started Python: reticulate then puts the
# environment's bin/ first and sets VIRTUAL_ENV, which a child R process
# would take as the user's choice of Python.
session_path <- Sys.getenv("PATH")

# Run R code in a fresh R process, in a folder of its own and with the
# environment of a fresh shell, as a user's session would be; returns its
# output and exit status.
run_r <- function(code, env = character()) {
  rscript <- file.path(R.home("bin"), "Rscript")
  folder <- tempfile("session-")
  dir.create(folder)
  old <- setwd(folder)
  on.exit(setwd(old))
  args <- c("-u", "VIRTUAL_ENV", paste0("PATH=", session_path), env,
            rscript, "-e", code)
  output <- suppressWarnings(system2("env", shQuote(args), stdout = TRUE,
                                     stderr = TRUE))
  list(output = paste(output, collapse = "\n"),
       status = attr(output, "status") %||% 0L)
}

# The value a fresh R process saved with saveRDS(value, OUT): `code` refers
# to the file as OUT.
run_r_value <- function(code, env = character()) {
  out <- tempfile(fileext = ".rds")
  result <- run_r(sprintf("OUT <- '%s'; %s", out, code), env = env)
  if (!file.exists(out)) {
    stop("the fresh R session failed:\n", result$output, call. = FALSE)
  }
  readRDS(out)
}

# The Python chosen over keras3's in the selection tests: the test suite's
# own environment (make passes it), which has Keras 3.
other_python <- function() {
  python <- Sys.getenv("ADAFACTOR_OTHER_PYTHON")
  skip_if_not(nzchar(python) && file.exists(python),
              "ADAFACTOR_OTHER_PYTHON (a second Python with Keras 3) is not set")
  python
}

# Iris, standardised, as keras3 takes it.
iris_data <- function() {
  list(x = unname(scale(as.matrix(iris[, 1:4]))),
       y = as.integer(iris$Species) - 1L)
}

iris_model <- function(optimizer = optimizer_adafactor(learning_rate = 0.05),
                       seed = 1) {
  set_random_seed(seed)
  model <- keras_model_sequential(input_shape = 4) |>
    layer_dense(16, activation = "relu") |>
    layer_dense(3)
  model |> compile(
    optimizer = optimizer,
    loss = loss_sparse_categorical_crossentropy(from_logits = TRUE)
  )
}

# fit() with the data in a fixed order, so that two runs can be compared.
fit_iris <- function(model, epochs, ...) {
  data <- iris_data()
  model |> fit(data$x, data$y, epochs = epochs, batch_size = 25,
               shuffle = FALSE, verbose = 0, ...)
}

`%||%` <- function(x, y) if (is.null(x)) y else x

# The type of each gradient `optimizer` receives, by variable path: a Python
# dict filled as the training step is traced.
spy_on_gradients <- function(optimizer) {
  spy <- reticulate::py_run_string(paste(
    "def spy_on_gradients(optimizer):",
    "    kinds = {}",
    "    update_step = optimizer.update_step",
    "    def recording(gradient, variable, learning_rate):",
    "        kinds[getattr(variable, 'path', variable.name)] = type(gradient).__name__",
    "        return update_step(gradient, variable, learning_rate)",
    "    optimizer.update_step = recording",
    "    return kinds",
    sep = "\n"), local = TRUE, convert = FALSE)
  spy$spy_on_gradients(optimizer)
}
