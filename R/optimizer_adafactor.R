#' Optimizer that implements the Adafactor algorithm
#'
#' @description
#' Adafactor is commonly used in NLP tasks, and has the advantage of taking
#' less memory because it only saves partial information of previous
#' gradients.
#'
#' The default argument setup is based on the original paper (see reference).
#' When gradients are of dimension > 2, Adafactor optimizer will delete the
#' last 2 dimensions separately in its accumulator variables.
#'
#' @section Memory and differences from Keras 3.15:
#' The optimizer keeps, for a variable of rank >= 2, only a row factor and a
#' column factor (n + m numbers for an n x m matrix), where Keras 3.15's
#' `keras.optimizers.Adafactor` also keeps a full-size buffer. It follows Keras
#' to float32 rounding, except that `relative_step = FALSE` turns the
#' iteration-dependent decay `min(learning_rate, 1 / sqrt(t))` off (Keras 3.15
#' applies it either way), a zero gradient row and column (a dead ReLU unit)
#' stays finite where Keras gives `NaN`, and float16 / bfloat16 variables keep
#' their state in float32.
#'
#' @section Masking keras3's `optimizer_adafactor()`:
#' This package depends on keras3: `library(adafactor)` attaches keras3
#' first and then itself, so `optimizer_adafactor()` is this package's in
#' either attach order (a later `library(keras3)` changes nothing), and R says
#' so once ("The following object is masked from 'package:keras3'"). That is
#' on purpose: the same call, with the same arguments, gets the memory-true
#' optimizer. Each stays reachable by its full name:
#' `adafactor::optimizer_adafactor()` (this one) and
#' `keras3::optimizer_adafactor()` (Keras's, with its full-size state).
#'
#' @section Sparse gradients:
#' An embedding's gradient on the TensorFlow backend is sparse (the rows the
#' batch looked up). The optimizer gives the result of the same gradient made
#' dense and updates only those rows of the table, unless `beta_1` is set
#' (every row then moves with its momentum).
#'
#' @section Additional arguments (`...`):
#' \describe{
#'   \item{`scale_parameter`}{`TRUE` (default) or `FALSE`. When `FALSE`, the
#'     step size is not multiplied by `max(epsilon_2, RMS(variable))`.}
#'   \item{`warmup_init`}{`FALSE` (default) or `TRUE`. With
#'     `relative_step = TRUE`, the relative step grows as `1e-6 * t`, capped
#'     by `1 / sqrt(t)`, as in Hugging Face's Adafactor; `learning_rate` is
#'     then not used. An error without `relative_step`.}
#'   \item{`beta_1`}{`NULL` (default) or a number in `[0, 1)`: momentum, an
#'     exponential moving average of the final update (a full-size state,
#'     only when asked for).}
#'   \item{`momentum_dtype`}{`"float32"` (default) or `"bfloat16"`: the type
#'     the momentum is stored in. It is computed in float32 and stored
#'     rounded (as optax's and t5x's `dtype_momentum`), so `"bfloat16"` halves
#'     the only full-size state. An error without `beta_1`.}
#'   \item{`min_dim_size_to_factor`}{`NULL` (default: factor every variable
#'     of rank >= 2) or a whole number: factor only when both of the last two
#'     dimensions are at least this size (128 in optax and t5x).}
#'   \item{`factored`}{`TRUE` (default) or `FALSE`: keep a full second
#'     moment for every variable.}
#'   \item{`stochastic_rounding`}{`TRUE` (default) or `FALSE`. The new value
#'     of a bfloat16 or float16 variable (`config_set_dtype_policy("bfloat16")`)
#'     is computed in float32 and rounded stochastically, up or down with the
#'     probabilities that make its expectation the float32 value, so that
#'     steps smaller than half the type's spacing (most of Adafactor's, in
#'     bfloat16) still move the weights. `FALSE` rounds to nearest. float32
#'     variables are never rounded.}
#'   \item{`seed`}{`NULL` (default) or a whole number in `[0, 2^31)`: the
#'     seed of the stochastic rounding. Its random bits come from the seed,
#'     the step count and the variable's position, with no other state, so a
#'     run repeats, a saved model continues bit for bit after loading, and
#'     every replica rounds alike. `NULL` takes Keras's global seed
#'     ([keras3::set_random_seed()]) when one is set, else 0; the value is
#'     kept in the optimizer's config.}
#' }
#' Any other name in `...` is an error, as is an unnamed argument.
#'
#' @param learning_rate A float, a `LearningRateSchedule()` instance, or a
#'   callable that takes no arguments and returns the actual value to use.
#'   The learning rate. Defaults to `0.001`.
#' @param beta_2_decay float, defaults to -0.8. The decay rate of `beta_2`.
#' @param epsilon_1 float, defaults to 1e-30. A small offset to keep
#'   denominator away from 0.
#' @param epsilon_2 float, defaults to 1e-3. A small offset to avoid learning
#'   rate becoming too small by time.
#' @param clip_threshold float, defaults to 1.0. Clipping threshold. This is a
#'   part of Adafactor algorithm, independent from `clipnorm`, `clipvalue`,
#'   and `global_clipnorm`.
#' @param relative_step bool, defaults to `TRUE`. If `learning_rate` is a
#'   constant and `relative_step=TRUE`, learning rate will be adjusted based
#'   on current iterations. This is a default learning rate decay in
#'   Adafactor. With `relative_step = FALSE` the step size is `learning_rate`
#'   itself (unlike Keras 3.15, see below).
#' @param weight_decay Float. If set, weight decay is applied.
#' @param clipnorm Float. If set, the gradient of each weight is individually
#'   clipped so that its norm is no higher than this value.
#' @param clipvalue Float. If set, the gradient of each weight is clipped to
#'   be no higher than this value.
#' @param global_clipnorm Float. If set, the gradient of all weights is
#'   clipped so that their global norm is no higher than this value.
#' @param use_ema Boolean, defaults to `FALSE`. If `TRUE`, exponential moving
#'   average (EMA) is applied. EMA consists of computing an exponential moving
#'   average of the weights of the model (as the weight values change after
#'   each training batch), and periodically overwriting the weights with their
#'   moving average.
#' @param ema_momentum Float, defaults to 0.99. Only used if `use_ema = TRUE`.
#'   This is the momentum to use when computing the EMA of the model's
#'   weights: `new_average = ema_momentum * old_average + (1 - ema_momentum) *
#'   current_variable_value`.
#' @param ema_overwrite_frequency Int or `NULL`, defaults to `NULL`. Only used
#'   if `use_ema=TRUE`. Every `ema_overwrite_frequency` steps of iterations, we
#'   overwrite the model variable by its moving average. If `NULL`, the
#'   optimizer does not overwrite model variables in the middle of training,
#'   and you need to explicitly overwrite the variables at the end of training
#'   by calling `optimizer$finalize_variable_values()` (which updates the
#'   model variables in-place). When using the built-in `fit()` training loop,
#'   this happens automatically after the last epoch, and you don't need to do
#'   anything.
#' @param name String. The name to use for momentum accumulator weights
#'   created by the optimizer.
#' @param ... For forward/backward compatability: the additional arguments
#'   listed below, by name.
#' @param loss_scale_factor Float or `NULL`. If a float, the scale factor will
#'   be multiplied the loss before computing gradients, and the inverse of the
#'   scale factor will be multiplied by the gradients before updating
#'   variables. Useful for preventing underflow during mixed precision
#'   training. Alternately, `optimizer_loss_scale()` will automatically set a
#'   loss scale factor.
#' @param gradient_accumulation_steps Int or `NULL`. If an int, model and
#'   optimizer variables will not be updated at every step; instead they will
#'   be updated every `gradient_accumulation_steps` steps, using the average
#'   value of the gradients since the last update. This is known as "gradient
#'   accumulation". This can be useful when your batch size is very small, in
#'   order to reduce gradient noise at each update step. EMA frequency will
#'   look at "accumulated" iterations value (optimizer steps //
#'   gradient_accumulation_steps). Learning rate schedules will look at "real"
#'   iterations value (optimizer steps).
#'
#' @returns an Optimizer instance
#'
#' @references Shazeer, N. and Stern, M. (2018). Adafactor: Adaptive Learning
#'   Rates with Sublinear Memory Cost. \doi{10.48550/arXiv.1804.04235}
#'   (arXiv:1804.04235).
#'
#' @seealso Keras's own Adafactor, with its full-size state:
#'   [keras3::optimizer_adafactor()]. Other optimizers:
#'   [keras3::optimizer_adam()], [keras3::optimizer_adam_w()],
#'   [keras3::optimizer_lion()], [keras3::optimizer_rmsprop()],
#'   [keras3::optimizer_sgd()].
#'
#' @examplesIf (interactive() || reticulate::py_available()) && adafactor_available()
#' model <- keras_model_sequential(input_shape = 4) |>
#'   layer_dense(16, activation = "relu") |>
#'   layer_dense(3, activation = "softmax")
#' model |> compile(
#'   optimizer = optimizer_adafactor(learning_rate = 0.01),
#'   loss = "sparse_categorical_crossentropy"
#' )
#'
#' # The T5 fine-tuning recipe, through `...`:
#' t5 <- optimizer_adafactor(learning_rate = 1e-3, relative_step = FALSE,
#'                           scale_parameter = FALSE)
#'
#' # Keras's own Adafactor (full-size state) is still there:
#' keras_own <- keras3::optimizer_adafactor()
#'
#' # bfloat16 weights, half the bytes of float32, that still learn: their
#' # new values are rounded stochastically (`stochastic_rounding = FALSE`
#' # rounds to nearest).
#' config_set_dtype_policy("bfloat16")
#' half <- keras_model_sequential(input_shape = 4) |>
#'   layer_dense(16, activation = "relu") |>
#'   layer_dense(1)
#' half |> compile(optimizer = optimizer_adafactor(seed = 1), loss = "mse")
#' x <- matrix(runif(256), ncol = 4)
#' history <- half |> fit(x, rowSums(x), epochs = 3, verbose = 0)
#' half$weights[[1]]$dtype
#' config_set_dtype_policy("float32")
#' @export
optimizer_adafactor <- function(
    learning_rate = 0.001,
    beta_2_decay = -0.8,
    epsilon_1 = 1e-30,
    epsilon_2 = 0.001,
    clip_threshold = 1,
    relative_step = TRUE,
    weight_decay = NULL,
    clipnorm = NULL,
    clipvalue = NULL,
    global_clipnorm = NULL,
    use_ema = FALSE,
    ema_momentum = 0.99,
    ema_overwrite_frequency = NULL,
    name = "adafactor",
    ...,
    loss_scale_factor = NULL,
    gradient_accumulation_steps = NULL) {
  # Every argument goes to Python, NULL as None: Python decides which may be
  # None (`relative_step = NULL` is an error there, not the default).
  args <- c(as.list(environment()), named_dots(...))
  module <- python_module()
  for (argument in names(args)) {
    check_scalar(argument, args[[argument]], module)
  }
  call_python(module$optimizer_adafactor, args)
}

# `...` as a named list; an unnamed argument is an error.
named_dots <- function(...) {
  dots <- list(...)
  if (length(dots) == 0L) {
    return(list())
  }
  unnamed <- which(!nzchar(names(dots) %||% rep("", length(dots))))
  if (length(unnamed) > 0L) {
    adafactor_stop(paste0(
      "Every argument in `...` must be named (for example ",
      "`scale_parameter = FALSE`). Received an unnamed argument: ",
      deparse_value(dots[[unnamed[[1L]]]])
    ))
  }
  dots
}

# An R value Python must never see: NA, a vector of length other than 1, a
# list. The error text comes from Python, the one source of truth; only the
# value is written the R way.
check_scalar <- function(argument, value, module) {
  if (is.null(value) || inherits(value, "python.builtin.object") ||
      is.function(value)) {
    return(invisible())
  }
  if (is.list(value) || length(value) != 1L || is.na(value)) {
    adafactor_stop(module$error_message(argument, deparse_value(value)))
  }
  invisible()
}

deparse_value <- function(value) {
  paste(deparse(value, width.cutoff = 60L, nlines = 2L), collapse = " ")
}

`%||%` <- function(x, y) if (is.null(x)) y else x

#' Print an Adafactor optimizer
#'
#' Shows the call of [optimizer_adafactor()] that makes an optimizer like
#' `x`: the arguments whose values differ from the defaults (from Python's
#' `non_default_arguments()`, the same that Python's `repr()` shows), written
#' in R. A learning-rate schedule is shown by its class.
#'
#' @param x An optimizer made by [optimizer_adafactor()].
#' @param ... Unused.
#' @returns `x`, invisibly.
#' @examplesIf (interactive() || reticulate::py_available()) && adafactor_available()
#' optimizer_adafactor(learning_rate = 0.01, beta_1 = 0.9)
#' @export
print.adafactor.optimizer.Adafactor <- function(x, ...) {
  arguments <- x$non_default_arguments()
  shown <- vapply(names(arguments), function(name) {
    paste(name, "=", r_spelling(arguments[[name]]))
  }, character(1))
  cat("<Adafactor> optimizer_adafactor(", paste(shown, collapse = ", "), ")\n", sep = "")
  invisible(x)
}

# A value of the optimizer's config as R writes it.
r_spelling <- function(value) {
  if (is.null(value)) {
    return("NULL")
  }
  if (is.logical(value) || is.character(value)) {
    return(deparse(value))
  }
  if (is.numeric(value)) {
    return(format(value, digits = 7))
  }
  if (is.list(value)) {
    return(sprintf("<%s>", value$class_name %||% "schedule"))
  }
  "<callable>"
}
