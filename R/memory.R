#' Optimizer state of a model, before training
#'
#' The bytes of optimizer state that `optimizer_adafactor()` with the
#' arguments in `...` keeps for `model`, beside Keras's Adafactor, Adam,
#' AdamW and SGD with their defaults (and the same `use_ema` and
#' `gradient_accumulation_steps`), counted exactly from the variables'
#' shapes and types (no state is created), with the parameters beside them:
#' what training holds before a step's gradients and activations. Under a
#' Keras distribution (`keras$distribution$set_distribution()`), also the
#' state each device holds, from the variables' layouts.
#'
#' @param model A built keras3 model (its trainable variables), or a list of
#'   variables.
#' @param ... Arguments of [optimizer_adafactor()] (`beta_1`,
#'   `momentum_dtype`, `factored`, `min_dim_size_to_factor`, `use_ema`, ...),
#'   checked as there.
#'
#' @returns A data.frame of class `adafactor_memory`, a row an optimizer:
#'   `optimizer`, `parameter_bytes` (the trainable variables), `state_bytes`
#'   (all the optimizer builds for them), `accumulator_bytes` (of which
#'   gradient accumulators: a copy of each variable with
#'   `gradient_accumulation_steps`), `total_bytes` (parameters and state),
#'   `times_parameters` (the state over the parameters' bytes) and
#'   `per_device_bytes` (`NA` without a distribution). It prints with the
#'   sizes in KiB, MiB or GiB.
#' @examplesIf (interactive() || reticulate::py_available()) && adafactor_available()
#' model <- keras_model_sequential(input_shape = 512) |>
#'   layer_dense(1024) |>
#'   layer_dense(10)
#' adafactor_memory(model)
#' adafactor_memory(model, beta_1 = 0.9, momentum_dtype = "bfloat16")
#' @export
adafactor_memory <- function(model, ...) {
  args <- named_dots(...)
  module <- python_module()
  for (argument in names(args)) {
    check_scalar(argument, args[[argument]], module)
  }
  report <- call_python(module$memory_report, c(list(model), args))
  rows <- lapply(reticulate::py_to_r(report$rows()), function(row) {
    data.frame(optimizer = row$optimizer,
               parameter_bytes = as.numeric(row$parameter_bytes),
               state_bytes = as.numeric(row$state_bytes),
               accumulator_bytes = as.numeric(row$accumulator_bytes),
               total_bytes = as.numeric(row$total_bytes),
               times_parameters = as.numeric(row$times_parameters),
               per_device_bytes = as.numeric(row$per_device_bytes %||% NA))
  })
  structure(do.call(rbind, rows), class = c("adafactor_memory", "data.frame"))
}

#' @export
print.adafactor_memory <- function(x, ...) {
  shown <- data.frame(
    optimizer = x$optimizer,
    parameters = format_bytes(x$parameter_bytes),
    state = format_bytes(x$state_bytes),
    `x parameters` = sprintf("%.3f", x$times_parameters),
    check.names = FALSE)
  if (any(x$accumulator_bytes > 0)) {
    shown$`of which accumulators` <- format_bytes(x$accumulator_bytes)
  }
  shown$total <- format_bytes(x$total_bytes)
  if (any(!is.na(x$per_device_bytes))) {
    shown$`per device` <- format_bytes(x$per_device_bytes)
  }
  print(shown, row.names = FALSE, right = TRUE)
  invisible(x)
}

format_bytes <- function(bytes) {
  units <- c("B", "KiB", "MiB", "GiB", "TiB")
  power <- pmin(floor(log(pmax(bytes, 1), 1024)), length(units) - 1)
  ifelse(power == 0, paste(bytes, "B"),
         sprintf("%.1f %s", bytes / 1024^power, units[power + 1]))
}
