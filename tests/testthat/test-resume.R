# Training from R, interrupted and resumed, or saved and loaded in a fresh
# session or in Python, continues bit for bit.

resume_model <- function(seed = 1) {
  iris_model(optimizer_adafactor(learning_rate = 0.05, use_ema = TRUE), seed)
}

# A model trained two epochs and saved: list(model, path).
saved_model <- function() {
  model <- resume_model()
  fit_iris(model, epochs = 2)
  path <- tempfile(fileext = ".keras")
  save_model(model, path)
  list(model = model, path = path)
}

optimizer_state <- function(model) {
  scalars_as_vectors(lapply(model$optimizer$variables, function(v) v$numpy()))
}

# A 0-d array reaches R as a plain number from v$numpy() and as a 1-d array
# from numpy.load(): compare them as numbers.
scalars_as_vectors <- function(arrays) {
  lapply(arrays, function(a) if (length(a) == 1L) as.vector(a) else a)
}

test_that("callback_backup_and_restore() resumes exactly as an uninterrupted run", {
  skip_without_python()
  straight <- resume_model()
  fit_iris(straight, epochs = 4)

  backup <- tempfile("backup-")
  interrupt <- callback_lambda(on_epoch_begin = function(epoch, logs) {
    if (epoch == 2) stop("simulated interruption")
  })
  interrupted <- resume_model()
  expect_error(fit_iris(interrupted, epochs = 4, callbacks = list(
    callback_backup_and_restore(backup), interrupt)), "simulated interruption")

  resumed <- resume_model(seed = 99)
  fit_iris(resumed, epochs = 4, callbacks = list(callback_backup_and_restore(backup)))
  expect_identical(optimizer_state(resumed), optimizer_state(straight))
  expect_identical(get_weights(resumed), get_weights(straight))
})

test_that("save_model(), then load_model() in a fresh session, continues bit for bit", {
  skip_without_python()
  saved <- saved_model()
  model <- saved$model
  path <- saved$path
  fit_iris(model, epochs = 2)

  fresh <- run_r_value(sprintf(paste(
    "library(adafactor)",
    "model <- load_model('%s')",
    "stopifnot(inherits(model$optimizer, 'adafactor.optimizer.Adafactor'))",
    "data <- list(x = unname(scale(as.matrix(iris[, 1:4]))), y = as.integer(iris$Species) - 1L)",
    "model |> fit(data$x, data$y, epochs = 2, batch_size = 25, shuffle = FALSE, verbose = 0)",
    "saveRDS(get_weights(model), OUT)", sep = "; "), path))
  expect_identical(fresh, get_weights(model))
})

# The weights as float32 arrays (reticulate has no R type for bfloat16).
float32_weights <- function(model) {
  lapply(model$weights, function(w) {
    reticulate::py_to_r(op_convert_to_numpy(op_cast(w, "float32")))
  })
}

test_that("bfloat16 weights, rounded stochastically, resume bit for bit in a fresh session", {
  skip_without_python()
  config_set_dtype_policy("bfloat16")
  on.exit(config_set_dtype_policy("float32"))
  model <- resume_model()
  expect_identical(model$weights[[1]]$dtype, "bfloat16")
  fit_iris(model, epochs = 2)
  path <- tempfile(fileext = ".keras")
  save_model(model, path)
  start <- float32_weights(model)
  fit_iris(model, epochs = 2)
  expect_false(identical(float32_weights(model), start))

  fresh <- run_r_value(sprintf(paste(
    "library(adafactor)",
    "model <- load_model('%s')",
    "stopifnot(model$weights[[1]]$dtype == 'bfloat16')",
    "data <- list(x = unname(scale(as.matrix(iris[, 1:4]))), y = as.integer(iris$Species) - 1L)",
    "model |> fit(data$x, data$y, epochs = 2, batch_size = 25, shuffle = FALSE, verbose = 0)",
    "w <- lapply(model$weights, function(w) {",
    "  reticulate::py_to_r(op_convert_to_numpy(op_cast(w, 'float32')))",
    "})",
    "saveRDS(w, OUT)", sep = "; "), path))
  expect_identical(fresh, float32_weights(model))
})

# A Python with Keras 3 and this package's Python module (the test suite's
# environment), running `code` with `args` in sys.argv.
run_python <- function(code, ...) {
  output <- system2(other_python(), c("-c", shQuote(code), shQuote(c(...))),
                    stdout = TRUE, stderr = TRUE,
                    env = c("KERAS_BACKEND=tensorflow", "TF_CPP_MIN_LOG_LEVEL=3"))
  expect_null(attr(output, "status"), info = paste(output, collapse = "\n"))
  invisible(output)
}

# Arrays a Python process saved with numpy.savez(path, *arrays), in order.
read_npz <- function(path) {
  arrays <- reticulate::import("numpy")$load(path)
  scalars_as_vectors(lapply(seq_along(arrays$files) - 1L,
                            function(i) arrays$get(sprintf("arr_%d", i))))
}

test_that("a model saved from R loads in Python with its optimizer state", {
  skip_without_python()
  saved <- saved_model()
  state <- tempfile(fileext = ".npz")
  run_python(paste(
    "import sys, keras, numpy as np, adafactor",
    "model = keras.saving.load_model(sys.argv[1])",
    "assert isinstance(model.optimizer, adafactor.Adafactor), type(model.optimizer)",
    "np.savez(sys.argv[2], *[v.numpy() for v in model.optimizer.variables])",
    sep = "\n"), saved$path, state)
  expect_identical(read_npz(state), optimizer_state(saved$model))
})

test_that("a model saved from Python loads in R with its optimizer state", {
  skip_without_python()
  path <- tempfile(fileext = ".keras")
  state <- tempfile(fileext = ".npz")
  run_python(paste(
    "import sys, keras, numpy as np",
    "from adafactor import optimizer_adafactor",
    "keras.utils.set_random_seed(1)",
    "layers = [keras.layers.Dense(16, activation='relu'), keras.layers.Dense(3)]",
    "model = keras.Sequential([keras.Input((4,)), *layers])",
    "model.compile(optimizer=optimizer_adafactor(learning_rate=0.05), loss='mse')",
    "x = np.linspace(-1, 1, 80, dtype='float32').reshape(20, 4)",
    "model.fit(x, x[:, :3], epochs=3, batch_size=5, verbose=0)",
    "model.save(sys.argv[1])",
    "np.savez(sys.argv[2], *[v.numpy() for v in model.optimizer.variables])",
    sep = "\n"), path, state)
  model <- load_model(path)
  expect_s3_class(model$optimizer, "adafactor.optimizer.Adafactor")
  expect_identical(as.integer(model$optimizer$iterations$numpy()), 12L)
  expect_identical(optimizer_state(model), read_npz(state))
})
