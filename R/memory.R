#' Optimizer state of a model, and whether its training fits an accelerator
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
#' With `compiled_for`, the question a user asks before renting an
#' accelerator: `fit()`'s training step for `model` and `batch` is compiled,
#' on this machine and without the accelerator, by the compiler of each
#' accelerator named (XLA:TPU, XLA:GPU), once with each optimizer, and each
#' device's peak is reported beside its memory. It needs Keras's JAX backend
#' and, in the Python keras3 uses, `jax[tpu]` (TPUs) or JAX's CUDA plugin
#' (GPUs) at JAX's version: the error says what to install. The weights need
#' not be made: a model built inside
#' `with(keras$StatelessScope(initialize_variables = FALSE), ...)` is planned
#' for from its shapes alone.
#'
#' @param model A built keras3 model (its trainable variables), or a list of
#'   variables; with `compiled_for`, a compiled model.
#' @param ... Arguments of [optimizer_adafactor()] (`beta_1`,
#'   `momentum_dtype`, `factored`, `min_dim_size_to_factor`, `use_ema`, ...),
#'   checked as there.
#' @param batch With `compiled_for`, one batch as `fit()` takes it: `x`, or
#'   `list(x, y)` (or with sample weights), each an array (only its shape
#'   and type are read) or a full shape with a dtype, the batch size
#'   included.
#' @param compiled_for `NULL`, or accelerators by name: TPU slices
#'   (`"v5e 2x2"`, `"v5p 2x2x1"`, `"v6e 1x1"`) or GPUs of a host
#'   (`"H100 x 4"`, `"A100 x 8"`, `"L4 x 1"`, `"T4 x 1"`). The step is laid
#'   out by the Keras distribution set, on as many of the accelerator's
#'   devices as its mesh has, or on one device without a distribution.
#'
#' @returns A data.frame of class `adafactor_memory`, a row an optimizer:
#'   `optimizer`, `parameter_bytes` (the trainable variables), `state_bytes`
#'   (all the optimizer builds for them), `accumulator_bytes` (of which
#'   gradient accumulators: a copy of each variable with
#'   `gradient_accumulation_steps`), `total_bytes` (parameters and state),
#'   `times_parameters` (the state over the parameters' bytes) and
#'   `per_device_bytes` (`NA` without a distribution). With `compiled_for`,
#'   a row an accelerator and optimizer, with also `compiled_for`, `devices`
#'   (those the step is laid out on), `per_device_peak_bytes` (one device's
#'   arguments, outputs and temporaries at the step's peak, as the compiler
#'   assigns them: no allocator's fragmentation or runtime reserve),
#'   `device_memory_bytes` (one device's memory), `fits` and
#'   `compiler_refused`: where the compiler refuses a step that cannot fit
#'   (XLA:TPU does), its message, with the peak `NA` and `fits` `FALSE`. It
#'   prints with the sizes in KiB, MiB or GiB.
#' @examplesIf (interactive() || reticulate::py_available()) && adafactor_available()
#' model <- keras_model_sequential(input_shape = 512) |>
#'   layer_dense(1024) |>
#'   layer_dense(10)
#' adafactor_memory(model)
#' adafactor_memory(model, beta_1 = 0.9, momentum_dtype = "bfloat16")
#' @examples
#' \dontrun{
#' # Needs keras3 on JAX, and jax[tpu] and JAX's CUDA plugin in its Python:
#' model |> compile(loss = "mse")
#' adafactor_memory(model, batch = list(array(0, c(64, 512)), array(0, c(64, 10))),
#'                  compiled_for = c("v5e 1x1", "L4 x 1"))
#' }
#' @export
adafactor_memory <- function(model, ..., batch = NULL, compiled_for = NULL) {
  args <- named_dots(...)
  module <- python_module()
  for (argument in names(args)) {
    check_scalar(argument, args[[argument]], module)
  }
  if (!is.null(compiled_for)) {
    if (!is.character(compiled_for) || length(compiled_for) == 0L || anyNA(compiled_for)) {
      adafactor_stop(module$error_message("compiled_for", deparse_value(compiled_for)))
    }
    args$compiled_for <- as.list(compiled_for)
  }
  args["batch"] <- list(batch)
  report <- call_python(module$memory_report, c(list(model), args))
  rows <- lapply(reticulate::py_to_r(report$rows()), memory_row)
  structure(do.call(rbind, rows), class = c("adafactor_memory", "data.frame"))
}

memory_row <- function(row) {
  out <- data.frame(optimizer = row$optimizer,
                    parameter_bytes = as.numeric(row$parameter_bytes),
                    state_bytes = as.numeric(row$state_bytes),
                    accumulator_bytes = as.numeric(row$accumulator_bytes),
                    total_bytes = as.numeric(row$total_bytes),
                    times_parameters = as.numeric(row$times_parameters),
                    per_device_bytes = as.numeric(row$per_device_bytes %||% NA))
  if (!is.null(row$compiled_for)) {
    out$compiled_for <- row$compiled_for
    out$devices <- as.integer(row$devices)
    out$per_device_peak_bytes <- as.numeric(row$per_device_peak_bytes %||% NA)
    out$device_memory_bytes <- as.numeric(row$device_memory_bytes)
    out$fits <- isTRUE(row$fits)
    out$compiler_refused <- row$compiler_refused %||% NA_character_
  }
  out
}

#' @export
print.adafactor_memory <- function(x, ...) {
  if (!is.null(x$compiled_for)) {
    return(print_compiled(x))
  }
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

# The compiled report: each accelerator's per-device peak by optimizer.
print_compiled <- function(x) {
  shown <- data.frame(
    accelerator = x$compiled_for,
    optimizer = x$optimizer,
    devices = x$devices,
    `peak/device` = ifelse(is.na(x$per_device_peak_bytes), "out of memory",
                           format_bytes(x$per_device_peak_bytes)),
    memory = format_bytes(x$device_memory_bytes),
    fits = ifelse(x$fits, "yes", "NO"),
    `state/device` = format_bytes(ifelse(is.na(x$per_device_bytes), x$state_bytes,
                                         x$per_device_bytes)),
    check.names = FALSE)
  print(shown, row.names = FALSE, right = TRUE)
  invisible(x)
}

format_bytes <- function(bytes) {
  units <- c("B", "KiB", "MiB", "GiB", "TiB")
  power <- pmin(floor(log(pmax(bytes, 1), 1024)), length(units) - 1)
  ifelse(power == 0, paste(bytes, "B"),
         sprintf("%.1f %s", bytes / 1024^power, units[power + 1]))
}
