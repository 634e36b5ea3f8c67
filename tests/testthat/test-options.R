# The additional arguments through `...`, from R.

state_shapes <- function(opt, keras) {
  opt$build(list(keras$Variable(matrix(0, 8, 6)), keras$Variable(matrix(0, 3, 200)),
                 keras$Variable(array(0, 5))))
  lapply(opt$variables[-(1:2)], function(v) dim(v$numpy()))
}

test_that("each option's state from R", {
  skip_without_python()
  keras <- reticulate::import("keras")
  expect_identical(state_shapes(optimizer_adafactor(), keras),
                   list(8L, 6L, 3L, 200L, 5L))
  expect_identical(state_shapes(optimizer_adafactor(factored = FALSE), keras),
                   list(c(8L, 6L), c(3L, 200L), 5L))
  expect_identical(state_shapes(optimizer_adafactor(min_dim_size_to_factor = 4), keras),
                   list(8L, 6L, c(3L, 200L), 5L))
  expect_identical(length(state_shapes(optimizer_adafactor(beta_1 = 0.9), keras)), 8L)
})

test_that("the T5 fine-tuning recipe trains a model from R", {
  skip_without_python()
  keras <- reticulate::import("keras")
  set.seed(1)
  x <- matrix(rnorm(256 * 8), 256, 8)
  y <- as.array(as.integer(x %*% rnorm(8) > 0))
  keras$utils$set_random_seed(0L)
  model <- keras$Sequential(list(
    keras$Input(shape = list(8L)),
    keras$layers$Dense(32L, activation = "relu"),
    keras$layers$Dense(2L)
  ))
  model$compile(
    optimizer = optimizer_adafactor(learning_rate = 1e-3, relative_step = FALSE,
                                    scale_parameter = FALSE),
    loss = keras$losses$SparseCategoricalCrossentropy(from_logits = TRUE),
    metrics = list("accuracy")
  )
  history <- model$fit(x, y, epochs = 15L, batch_size = 32L, verbose = 0L)
  loss <- unlist(history$history$loss)
  expect_lt(loss[[length(loss)]], 0.6 * loss[[1]])
  expect_gt(tail(unlist(history$history$accuracy), 1), 0.9)
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
