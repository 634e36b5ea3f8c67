# The keras3 pipeline, in keras3's own idioms.

state_size <- function(optimizer) {
  sizes <- vapply(optimizer$variables, function(v) length(v$numpy()), integer(1))
  sum(sizes) - 2L # without the iteration count and the learning rate
}

test_that("compile() and fit() train with the memory-true optimizer", {
  skip_without_python()
  model <- iris_model()
  history <- fit_iris(model, epochs = 20)
  expect_s3_class(model$optimizer, "adafactor.optimizer.Adafactor")
  loss <- history$metrics$loss
  expect_true(all(is.finite(loss)))
  expect_lt(tail(loss, 1), loss[[1]] / 2)
  # Kernels 4 x 16 and 16 x 3 keep n + m numbers; biases a full moment.
  expect_identical(state_size(model$optimizer), (4L + 16L) + (16L + 3L) + 16L + 3L)
})

test_that("the function is this package's in both attach orders", {
  expect_identical(environmentName(environment(optimizer_adafactor)), "adafactor")
  masked <- function(first, second) {
    run_r(sprintf(paste(
      "suppressPackageStartupMessages({library(%s); library(%s)})",
      "cat(environmentName(environment(optimizer_adafactor)))", sep = "; "),
      first, second))
  }
  expect_match(masked("keras3", "adafactor")$output, "adafactor$")
  expect_match(masked("adafactor", "keras3")$output, "adafactor$")
})

test_that("callback_learning_rate_scheduler() sets the rate the optimizer applies", {
  skip_without_python()
  scheduled <- iris_model(optimizer_adafactor(learning_rate = 0.05))
  fit_iris(scheduled, epochs = 3, callbacks = list(
    callback_learning_rate_scheduler(function(epoch, lr) 0.01)))
  constant <- iris_model(optimizer_adafactor(learning_rate = 0.01))
  fit_iris(constant, epochs = 3)
  expect_equal(as.numeric(scheduled$optimizer$learning_rate), 0.01, tolerance = 1e-7)
  expect_identical(get_weights(scheduled), get_weights(constant))
})

test_that("callback_reduce_lr_on_plateau() lowers the rate the optimizer applies", {
  skip_without_python()
  # No epoch counts as an improvement after the first: the rate halves at
  # the end of epochs 2 and 3.
  plateau <- iris_model()
  fit_iris(plateau, epochs = 3, callbacks = list(callback_reduce_lr_on_plateau(
    monitor = "loss", factor = 0.5, patience = 0, min_delta = 100)))
  by_hand <- iris_model()
  fit_iris(by_hand, epochs = 2)
  by_hand$optimizer$learning_rate <- 0.025
  fit_iris(by_hand, epochs = 1)
  expect_equal(as.numeric(plateau$optimizer$learning_rate), 0.0125, tolerance = 1e-7)
  expect_identical(get_weights(plateau), get_weights(by_hand))
})

test_that("a learning_rate_schedule_*() drives the rate", {
  skip_without_python()
  schedule <- learning_rate_schedule_exponential_decay(0.05, decay_steps = 6,
                                                       decay_rate = 0.5)
  model <- iris_model(optimizer_adafactor(learning_rate = schedule))
  history <- fit_iris(model, epochs = 4) # 6 steps an epoch
  expect_true(all(is.finite(history$metrics$loss)))
  expect_identical(as.integer(model$optimizer$iterations$numpy()), 24L)
  expect_equal(as.numeric(model$optimizer$learning_rate), 0.05 * 0.5^4,
               tolerance = 1e-6)
  constant <- iris_model()
  fit_iris(constant, epochs = 4)
  expect_false(identical(get_weights(model), get_weights(constant)))
})

test_that("an embedding model trains on the default backend (sparse gradients)", {
  skip_without_python()
  set.seed(2)
  tokens <- matrix(sample(1:49, 64 * 6, replace = TRUE), 64, 6) # never 0
  labels <- as.integer(rowSums(tokens < 25) > 3)
  set_random_seed(2)
  model <- keras_model_sequential(input_shape = 6) |>
    layer_embedding(input_dim = 50, output_dim = 8) |>
    layer_global_average_pooling_1d() |>
    layer_dense(2)
  optimizer <- optimizer_adafactor(learning_rate = 0.05)
  gradient_kinds <- spy_on_gradients(optimizer)
  model |> compile(optimizer = optimizer,
                   loss = loss_sparse_categorical_crossentropy(from_logits = TRUE))
  before <- get_weights(model)[[1]]
  history <- model |> fit(tokens, labels, epochs = 10, batch_size = 16, verbose = 0)
  after <- get_weights(model)[[1]]
  expect_identical(keras3::config_backend(), "tensorflow")
  # The table's gradient reached the optimizer sparse, the others dense.
  kinds <- unlist(reticulate::py_to_r(gradient_kinds))
  expect_identical(unname(kinds[grepl("embedding", names(kinds))]), "IndexedSlices")
  expect_true(all(kinds[!grepl("embedding", names(kinds))] != "IndexedSlices"))
  expect_true(all(is.finite(history$metrics$loss)))
  expect_lt(tail(history$metrics$loss, 1), history$metrics$loss[[1]])
  # Token 0 (row 1) was never looked up: its row is unchanged.
  expect_identical(after[1, ], before[1, ])
  expect_false(identical(after[-1, ], before[-1, ]))
  # The 50 x 8 table keeps 50 + 8 numbers.
  expect_identical(state_size(model$optimizer), (50L + 8L) + (8L + 2L) + 2L)
})
