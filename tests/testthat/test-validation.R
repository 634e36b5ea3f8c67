bad_arguments <- function() {
  utils::read.csv(test_path("fixtures", "bad-arguments.csv"),
                  stringsAsFactors = FALSE)
}

test_that("every bad value in the shared table is an R error with the Python rule", {
  skip_without_python()
  table <- bad_arguments()
  expect_gt(nrow(table), 40L)
  for (i in seq_len(nrow(table))) {
    argument <- table$argument[[i]]
    args <- list(eval(parse(text = table$r[[i]])))
    names(args) <- argument
    if (argument == "ema_overwrite_frequency") args$use_ema <- TRUE
    expected <- paste0("`", argument, "` must be ", accepted(argument),
                       ". Received: ", argument, "=")
    expect_error(do.call(optimizer_adafactor, args), expected, fixed = TRUE,
                 class = "adafactor_error",
                 label = paste0(argument, " = ", table$r[[i]]))
  }
})

test_that("the R session survives every bad argument and still works", {
  skip_without_python()
  for (bad in list(NA, NA_real_, c(0.1, 0.2), list(0.1), "x", -1, Inf)) {
    expect_error(optimizer_adafactor(learning_rate = bad), class = "adafactor_error")
  }
  expect_s3_class(optimizer_adafactor(), "adafactor.optimizer.Adafactor")
})
