# Keras's distribution API from R, as keras3's distribution vignette uses it
# (`keras$distribution`): JAX, four CPU devices, set before Python starts.

test_that("ModelParallel from R: state sharded like its kernel, result as on one device", {
  skip_without_python()
  python <- other_python()
  skip_if(system2(python, c("-c", shQuote("import jax")), stdout = FALSE, stderr = FALSE) != 0L,
          "jax (the JAX backend) is not installed in ADAFACTOR_OTHER_PYTHON")
  result <- run_r_value(paste(sep = "\n",
    "library(adafactor)",
    "train <- function() {",
    "  set_random_seed(4)",
    "  model <- keras_model_sequential(input_shape = 64) |>",
    "    layer_dense(1024, activation = 'relu', name = 'd1') |>",
    "    layer_dense(2, name = 'out')",
    "  model |> compile(optimizer = optimizer_adafactor(learning_rate = 0.05, beta_1 = 0.9),",
    "    loss = loss_sparse_categorical_crossentropy(from_logits = TRUE))",
    "  set.seed(2); x <- matrix(rnorm(64 * 64), 64); y <- as.integer(rowSums(x[, 1:3]) > 0)",
    "  model |> fit(x, y, batch_size = 16, epochs = 2, shuffle = FALSE, verbose = 0)",
    "  model",
    "}",
    "single <- train()",
    "distribution <- keras$distribution",
    "devices <- distribution$list_devices('cpu')",
    "mesh <- distribution$DeviceMesh(shape = c(1L, 4L), axis_names = c('batch', 'model'),",
    "  devices = devices)",
    "layout_map <- distribution$LayoutMap(mesh)",
    "reticulate::py_set_item(layout_map, '.*d1/kernel', reticulate::tuple(NULL, 'model'))",
    "distribution$set_distribution(distribution$ModelParallel(layout_map = layout_map,",
    "  batch_dim_name = 'batch'))",
    "parallel <- train()",
    "shard <- function(v) unlist(reticulate::py_to_r(v$value$addressable_shards[[1]]$data$shape))",
    "state <- parallel$optimizer$variables[-(1:2)]",
    "saveRDS(list(",
    "  devices = length(devices),",
    "  names = vapply(state, function(v) v$name, ''),",
    "  shards = lapply(state, shard),",
    "  kernel = shard(parallel$layers[[1]]$kernel),",
    "  difference = max(abs(unlist(get_weights(single)) - unlist(get_weights(parallel))))",
    "), OUT)"),
    env = c(paste0("RETICULATE_PYTHON=", python), "KERAS_BACKEND=jax",
            "XLA_FLAGS=--xla_force_host_platform_device_count=4"))
  expect_identical(result$devices, 4L)
  expect_equal(result$kernel, c(64, 256))
  shards <- setNames(result$shards, sub("^sequential(_[0-9]+)?_", "", result$names))
  # The (64, 1024) kernel's momentum: a quarter on each device, as the
  # kernel; its column factor sharded along the kept 1024 axis, its row
  # factor (64) whole.
  expect_equal(shards$d1_kernel_momentum, c(64, 256))
  expect_equal(shards$d1_kernel_col, 256)
  expect_equal(shards$d1_kernel_row, 64)
  expect_lte(result$difference, 2e-6)
})
