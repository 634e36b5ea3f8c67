# adafactor_memory() and momentum_dtype from R.

memory_model <- function() {
  keras_model_sequential(input_shape = 64) |>
    layer_dense(256, activation = "relu") |>
    layer_dense(3)
}

# The bytes of the state an optimizer makes when built for `model`.
built_bytes <- function(optimizer, model) {
  optimizer$build(model$trainable_variables)
  state <- optimizer$variables[-(1:2)] # after iterations and learning rate
  sum(vapply(state, function(v) {
    bytes <- if (v$dtype == "bfloat16") 2 else 4
    as.numeric(reticulate::import("math")$prod(reticulate::py_get_attr(v, "shape"))) * bytes
  }, numeric(1)))
}

test_that("adafactor_memory() reports the bytes each optimizer builds", {
  skip_without_python()
  model <- memory_model()
  report <- adafactor_memory(model)
  expect_s3_class(report, "adafactor_memory")
  expect_identical(report$optimizer, c("adafactor", "keras Adafactor", "Adam", "AdamW", "SGD"))
  expect_equal(report$state_bytes[[1]], built_bytes(optimizer_adafactor(), model))
  expect_equal(report$state_bytes[[3]], built_bytes(optimizer_adam(), model))
  expect_true(all(is.na(report$per_device_bytes)))
  momentum <- adafactor_memory(model, beta_1 = 0.9, momentum_dtype = "bfloat16")
  expect_equal(momentum$state_bytes[[1]],
               built_bytes(optimizer_adafactor(beta_1 = 0.9, momentum_dtype = "bfloat16"),
                           model))
  # The bfloat16 momentum: 2 bytes a parameter beside the factors.
  parameters <- count_params(model)
  expect_equal(momentum$state_bytes[[1]] - report$state_bytes[[1]], 2 * parameters)
  printed <- paste(capture.output(print(report)), collapse = "\n")
  expect_match(printed, "adafactor")
  expect_match(printed, "KiB")
  # The parameters beside the state, and with gradient accumulation a copy
  # of them for every optimizer.
  expect_equal(report$parameter_bytes, rep(4 * parameters, 5))
  expect_equal(report$total_bytes, report$parameter_bytes + report$state_bytes)
  accumulated <- adafactor_memory(model, gradient_accumulation_steps = 4)
  expect_equal(accumulated$accumulator_bytes, rep(4 * parameters, 5))
  expect_equal(accumulated$state_bytes, report$state_bytes + 4 * parameters)
  expect_match(paste(capture.output(print(accumulated)), collapse = "\n"), "accumulators")
})

test_that("adafactor_memory() and momentum_dtype check their arguments as Python does", {
  skip_without_python()
  model <- memory_model()
  expect_error(adafactor_memory(model, beta_1 = 2),
               paste0("`beta_1` must be ", accepted("beta_1"), ". Received: beta_1="),
               fixed = TRUE, class = "adafactor_error")
  expect_error(optimizer_adafactor(momentum_dtype = "bfloat16"),
               "`momentum_dtype` needs `beta_1`", fixed = TRUE, class = "adafactor_error")
  expect_error(optimizer_adafactor(beta_1 = 0.9, momentum_dtype = "float16"),
               paste0("`momentum_dtype` must be ", accepted("momentum_dtype")),
               fixed = TRUE, class = "adafactor_error")
  config <- optimizer_adafactor(beta_1 = 0.9, momentum_dtype = "bfloat16")$get_config()
  expect_identical(config$momentum_dtype, "bfloat16")
})
