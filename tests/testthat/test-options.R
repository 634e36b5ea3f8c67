# The additional arguments through `...`, from R.

state_shapes <- function(opt) {
  opt$build(list(keras$Variable(matrix(0, 8, 6)), keras$Variable(matrix(0, 3, 200)),
                 keras$Variable(array(0, 5))))
  lapply(opt$variables[-(1:2)], function(v) dim(v$numpy()))
}

test_that("each option's state from R", {
  skip_without_python()
  expect_identical(state_shapes(optimizer_adafactor()),
                   list(8L, 6L, 3L, 200L, 5L))
  expect_identical(state_shapes(optimizer_adafactor(factored = FALSE)),
                   list(c(8L, 6L), c(3L, 200L), 5L))
  expect_identical(state_shapes(optimizer_adafactor(min_dim_size_to_factor = 4)),
                   list(8L, 6L, c(3L, 200L), 5L))
  expect_identical(length(state_shapes(optimizer_adafactor(beta_1 = 0.9))), 8L)
})

test_that("the T5 fine-tuning recipe trains a model from R", {
  skip_without_python()
  set.seed(1)
  x <- matrix(rnorm(256 * 8), 256, 8)
  y <- as.integer(x %*% rnorm(8) > 0)
  set_random_seed(0)
  model <- keras_model_sequential(input_shape = 8) |>
    layer_dense(32, activation = "relu") |>
    layer_dense(2)
  model |> compile(
    optimizer = optimizer_adafactor(learning_rate = 1e-3, relative_step = FALSE,
                                    scale_parameter = FALSE),
    loss = loss_sparse_categorical_crossentropy(from_logits = TRUE),
    metrics = "accuracy"
  )
  history <- model |> fit(x, y, epochs = 15, batch_size = 32, verbose = 0)
  loss <- history$metrics$loss
  expect_lt(loss[[length(loss)]], 0.6 * loss[[1]])
  expect_gt(tail(history$metrics$accuracy, 1), 0.9)
  config <- model$optimizer$get_config()
  expect_identical(config$relative_step, FALSE)
  expect_identical(config$scale_parameter, FALSE)
})

test_that("warmup_init without relative_step is an error from R", {
  skip_without_python()
  expect_error(optimizer_adafactor(warmup_init = TRUE, relative_step = FALSE),
               "`warmup_init` needs `relative_step`", fixed = TRUE,
               class = "adafactor_error")
})
