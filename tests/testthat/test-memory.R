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

test_that("adafactor_memory() checks compiled_for and batch as Python does", {
  skip_without_python()
  model <- memory_model()
  batch <- list(array(0, c(8, 64)), array(0, c(8, 3)))
  for (bad in list(4, NA_character_, character())) {
    expect_error(adafactor_memory(model, batch = batch, compiled_for = bad),
                 paste0("`compiled_for` must be ", accepted("compiled_for"),
                        ". Received: compiled_for=", deparse_value(bad)),
                 fixed = TRUE, class = "adafactor_error")
  }
  expect_error(adafactor_memory(model, batch = batch, compiled_for = "Z100 x 4"),
               "Received: compiled_for='Z100 x 4'", fixed = TRUE, class = "adafactor_error")
  expect_error(adafactor_memory(model, compiled_for = "H100 x 4"),
               paste0("`batch` must be ", accepted("batch"), ". Received: batch=None"),
               fixed = TRUE, class = "adafactor_error")
  expect_error(adafactor_memory(model, batch = batch),
               "`batch` is read with compiled_for only", fixed = TRUE, class = "adafactor_error")
})

test_that("a compiled report prints each accelerator's peak beside its memory", {
  row <- function(optimizer, peak, fits) {
    list(optimizer = optimizer, parameter_bytes = 4e9, state_bytes = 1e6,
         accumulator_bytes = 0, total_bytes = 4.001e9, times_parameters = 0.00025,
         per_device_bytes = NULL, compiled_for = "T4 x 1", devices = 1L,
         per_device_peak_bytes = peak, device_memory_bytes = 15843721216, fits = fits)
  }
  report <- structure(do.call(rbind, list(memory_row(row("adafactor", 9 * 2^30, TRUE)),
                                          memory_row(row("Adam", 17 * 2^30, FALSE)))),
                      class = c("adafactor_memory", "data.frame"))
  expect_identical(report$fits, c(TRUE, FALSE))
  expect_identical(report$devices, c(1L, 1L))
  printed <- capture.output(print(report))
  expect_match(printed[[1]],
               "accelerator +optimizer +devices +peak/device +memory +fits +state/device")
  expect_match(printed[[2]], "T4 x 1 +adafactor +1 +9.0 GiB +14.8 GiB +yes")
  expect_match(printed[[3]], "T4 x 1 +Adam +1 +17.0 GiB +14.8 GiB +NO")
})

test_that("from R, the compiled report is Python's, in a Python with the compilers", {
  python <- Sys.getenv("ADAFACTOR_ACCELERATOR_PYTHON")
  skip_if_not(nzchar(python) && file.exists(python), paste(
    "ADAFACTOR_ACCELERATOR_PYTHON (a Python with jax[tpu] and JAX's CUDA plugin:",
    "make .stamps/accelerators) is not set"))
  result <- run_r_value(paste(
    "library(keras3); library(adafactor)",
    "model <- keras_model_sequential(input_shape = 64) |> layer_dense(256) |> layer_dense(3)",
    "model |> compile(optimizer = optimizer_adafactor(), loss = 'mse')",
    "batch <- list(array(0, c(8, 64)), array(0, c(8, 3)))",
    "targets <- c('v5e 1x1', 'T4 x 1')",
    "report <- adafactor_memory(model, beta_1 = 0.9, batch = batch, compiled_for = targets)",
    paste("python <- adafactor:::python_module()$memory_report(model, beta_1 = 0.9,",
          "batch = reticulate::tuple(batch), compiled_for = list('v5e 1x1', 'T4 x 1'))$rows()"),
    "saveRDS(list(report = report, python = python, printed = capture.output(print(report))), OUT)",
    sep = "; "),
    env = c(paste0("RETICULATE_PYTHON=", python), "KERAS_BACKEND=jax", "JAX_PLATFORMS=cpu"))
  report <- result$report
  expect_identical(report$compiled_for, rep(c("v5e 1x1", "T4 x 1"), each = 5))
  optimizers <- c("adafactor", "keras Adafactor", "Adam", "AdamW", "SGD")
  expect_identical(report$optimizer, rep(optimizers, 2))
  python_peaks <- vapply(result$python, function(row) as.numeric(row$per_device_peak_bytes), 0)
  expect_identical(report$per_device_peak_bytes, python_peaks)
  expect_true(all(report$fits))
  expect_true(all(report$per_device_peak_bytes > report$parameter_bytes))
  expect_match(paste(result$printed, collapse = "\n"),
               "v5e 1x1 +adafactor +1 +[0-9.]+ KiB +16.0 GiB +yes")
})
