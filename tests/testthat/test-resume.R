# Training from R, interrupted and resumed, continues bit for bit.

resume_data <- function() {
  set.seed(3)
  x <- matrix(rnorm(96 * 4), 96, 4)
  list(x = x, y = as.array(as.integer(x[, 1] + x[, 2] > 0)))
}

resume_model <- function(keras, seed) {
  keras$utils$set_random_seed(as.integer(seed))
  model <- keras$Sequential(list(
    keras$Input(shape = list(4L)),
    keras$layers$Dense(8L, activation = "relu"),
    keras$layers$Dense(2L)
  ))
  model$compile(
    optimizer = optimizer_adafactor(learning_rate = 0.05, use_ema = TRUE),
    loss = keras$losses$SparseCategoricalCrossentropy(from_logits = TRUE)
  )
  model
}

fit_args <- function(data, ...) {
  c(list(data$x, data$y, batch_size = 16L, epochs = 4L, shuffle = FALSE,
         verbose = 0L), list(...))
}

test_that("BackupAndRestore from R resumes exactly as an uninterrupted run", {
  skip_without_python()
  keras <- reticulate::import("keras")
  data <- resume_data()
  straight <- resume_model(keras, 1)
  do.call(straight$fit, fit_args(data))

  backup <- tempfile("backup-")
  interrupt <- keras$callbacks$LambdaCallback(
    on_epoch_begin = function(epoch, logs) {
      if (epoch == 2) stop("simulated interruption")
    }
  )
  interrupted <- resume_model(keras, 1)
  expect_error(do.call(interrupted$fit, fit_args(data, callbacks = list(
    keras$callbacks$BackupAndRestore(backup), interrupt
  ))), "simulated interruption")

  resumed <- resume_model(keras, 99)
  do.call(resumed$fit, fit_args(data, callbacks = list(
    keras$callbacks$BackupAndRestore(backup)
  )))
  expect_identical(resumed$optimizer$iterations$numpy(),
                   straight$optimizer$iterations$numpy())
  expect_identical(resumed$get_weights(), straight$get_weights())
})

test_that("a model saved from R loads back with its Adafactor state", {
  skip_without_python()
  keras <- reticulate::import("keras")
  data <- resume_data()
  model <- resume_model(keras, 1)
  do.call(model$fit, fit_args(data, epochs = 2L))
  path <- tempfile(fileext = ".keras")
  model$save(path)
  loaded <- keras$saving$load_model(path)
  expect_s3_class(loaded$optimizer, "adafactor.optimizer.Adafactor")
  saved_state <- lapply(model$optimizer$variables, function(v) v$numpy())
  loaded_state <- lapply(loaded$optimizer$variables, function(v) v$numpy())
  expect_identical(loaded_state, saved_state)
  do.call(model$fit, fit_args(data, epochs = 2L))
  do.call(loaded$fit, fit_args(data, epochs = 2L))
  expect_identical(loaded$get_weights(), model$get_weights())
})
