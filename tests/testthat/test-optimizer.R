test_that("the R function returns the Python Adafactor with the defaults", {
  skip_without_python()
  opt <- optimizer_adafactor()
  expect_s3_class(opt, "adafactor.optimizer.Adafactor")
  expect_s3_class(opt, "keras.src.optimizers.optimizer.Optimizer")
  config <- opt$get_config()
  expect_equal(config$learning_rate, 0.001, tolerance = 1e-7)
  expect_identical(config$beta_2_decay, -0.8)
  expect_identical(config$epsilon_1, 1e-30)
  expect_identical(config$clip_threshold, 1)
  expect_identical(config$relative_step, TRUE)
  expect_identical(config$use_ema, FALSE)
  expect_identical(config$name, "adafactor")
  expect_null(config$weight_decay)
  expect_null(config$gradient_accumulation_steps)
})

test_that("NULL becomes None and every argument reaches Python", {
  skip_without_python()
  config <- optimizer_adafactor(
    learning_rate = 0.02, beta_2_decay = -0.5, epsilon_1 = 1e-20,
    epsilon_2 = 0.01, clip_threshold = 2, relative_step = FALSE,
    weight_decay = 0.1, clipnorm = NULL, clipvalue = 0.5,
    global_clipnorm = NULL, use_ema = TRUE, ema_momentum = 0.9,
    ema_overwrite_frequency = 10, name = "mine", loss_scale_factor = 4,
    gradient_accumulation_steps = 3
  )$get_config()
  expect_identical(config$relative_step, FALSE)
  expect_identical(config$weight_decay, 0.1)
  expect_null(config$clipnorm)
  expect_identical(config$clipvalue, 0.5)
  expect_identical(config$use_ema, TRUE)
  expect_identical(config$ema_momentum, 0.9)
  expect_identical(config$ema_overwrite_frequency, 10L)
  expect_identical(config$name, "mine")
  expect_identical(config$loss_scale_factor, 4)
  expect_identical(config$gradient_accumulation_steps, 3L)
})

test_that("R integers and whole doubles are coerced where Keras needs it", {
  skip_without_python()
  expect_identical(optimizer_adafactor(learning_rate = 1L)$get_config()$learning_rate, 1)
  expect_identical(
    optimizer_adafactor(use_ema = TRUE,
                        ema_overwrite_frequency = 5L)$get_config()$ema_overwrite_frequency,
    5L)
  expect_identical(
    optimizer_adafactor(gradient_accumulation_steps = 4)$get_config()$gradient_accumulation_steps,
    4L)
})

test_that("`...` passes named additional arguments and rejects the rest", {
  skip_without_python()
  config <- optimizer_adafactor(scale_parameter = FALSE, beta_1 = 0.9,
                                min_dim_size_to_factor = 128)$get_config()
  expect_identical(config$scale_parameter, FALSE)
  expect_identical(config$beta_1, 0.9)
  expect_identical(config$min_dim_size_to_factor, 128L)
  expect_error(optimizer_adafactor(0.1, -0.8, 1e-30, 0.001, 1, TRUE, NULL, NULL,
                                   NULL, NULL, FALSE, 0.99, NULL, "n", "oops"),
               "Every argument in `...` must be named", fixed = TRUE,
               class = "adafactor_error")
  expect_error(optimizer_adafactor(bogus = 1), "Unknown argument(s): bogus=1.0.",
               fixed = TRUE, class = "adafactor_error")
  expect_error(optimizer_adafactor(beta1 = 0.9),
               "Unknown argument(s): beta1=0.9 (did you mean `beta_1`?).",
               fixed = TRUE, class = "adafactor_error")
})

test_that("bad values give an R error in the words of the Python rule", {
  skip_without_python()
  expect_error(optimizer_adafactor(learning_rate = -1),
               paste0("`learning_rate` must be ", accepted("learning_rate"),
                      ". Received: learning_rate=-1.0"),
               fixed = TRUE, class = "adafactor_error")
  expect_error(optimizer_adafactor(ema_overwrite_frequency = 2.5, use_ema = TRUE),
               accepted("ema_overwrite_frequency"), fixed = TRUE)
  expect_error(optimizer_adafactor(relative_step = "yes"),
               "`relative_step` must be TRUE/True or FALSE/False. Received: relative_step='yes'",
               fixed = TRUE)
})

test_that("NA, vectors and lists are caught in R and named", {
  skip_without_python()
  expect_error(optimizer_adafactor(learning_rate = NA),
               paste0("`learning_rate` must be ", accepted("learning_rate"),
                      ". Received: learning_rate=NA"),
               fixed = TRUE, class = "adafactor_error")
  expect_error(optimizer_adafactor(clipnorm = c(1, 2)),
               "Received: clipnorm=c(1, 2)", fixed = TRUE)
  expect_error(optimizer_adafactor(epsilon_2 = list(0.1)),
               "`epsilon_2` must be a finite number >= 0. Received: epsilon_2=list(0.1)",
               fixed = TRUE)
  expect_error(optimizer_adafactor(beta_1 = NA_real_),
               "`beta_1` must be", fixed = TRUE)
})

test_that("a LearningRateSchedule passes through", {
  skip_without_python()
  schedule <- learning_rate_schedule_exponential_decay(0.1, 10, 0.5)
  config <- optimizer_adafactor(learning_rate = schedule)$get_config()
  expect_identical(config$learning_rate$class_name, "ExponentialDecay")
})

test_that("the R-made optimizer keeps the factored state: n + m numbers", {
  skip_without_python()
  opt <- optimizer_adafactor()
  opt$build(list(keras$Variable(matrix(0, 64, 48)), keras$Variable(array(0, 48))))
  shapes <- lapply(opt$variables, function(v) dim(v$numpy()))
  expect_identical(shapes[-(1:2)], list(64L, 48L, 48L))
  sizes <- vapply(opt$variables, function(v) length(v$numpy()), integer(1))
  expect_identical(sum(sizes), 2L + 64L + 48L + 48L)
})

test_that("an optimizer prints the R call that makes it: its non-default arguments", {
  skip_without_python()
  expect_output(print(optimizer_adafactor()), "<Adafactor> optimizer_adafactor()",
                fixed = TRUE)
  opt <- optimizer_adafactor(learning_rate = 0.01, relative_step = FALSE, name = "t5",
                             beta_1 = 0.9, momentum_dtype = "bfloat16")
  shown <- capture.output(print(opt))
  expect_identical(shown, paste0(
    "<Adafactor> optimizer_adafactor(name = \"t5\", learning_rate = 0.01, ",
    "relative_step = FALSE, beta_1 = 0.9, momentum_dtype = \"bfloat16\")"))
  again <- eval(parse(text = sub("^<Adafactor> ", "", shown)))
  expect_identical(again$get_config(), opt$get_config())
  schedule <- learning_rate_schedule_exponential_decay(0.1, 10, 0.9)
  expect_output(print(optimizer_adafactor(learning_rate = schedule)),
                "optimizer_adafactor(learning_rate = <ExponentialDecay>)", fixed = TRUE)
})
