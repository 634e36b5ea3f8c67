# The help pages' examples run only where Python has started (or in an
# interactive session), so that R CMD check --as-cran does not start Python
# and TensorFlow for them; here Python has started, and they run.
run_example <- function(topic) {
  paste(capture.output(
    example(topic, package = "adafactor", character.only = TRUE, ask = FALSE)
  ), collapse = "\n")
}

test_that("the examples run once Python has started, and show what they promise", {
  skip_without_python()
  expect_true(reticulate::py_available())
  expect_match(run_example("adafactor_available"), "[1] TRUE", fixed = TRUE)
  memory <- run_example("adafactor_memory")
  expect_match(memory, "keras Adafactor", fixed = TRUE)
  expect_match(memory, "bfloat16", fixed = TRUE)
  expect_match(run_example("print.adafactor.optimizer.Adafactor"),
               "<Adafactor> optimizer_adafactor(learning_rate = 0.01, beta_1 = 0.9)",
               fixed = TRUE)
  made <- run_example("optimizer_adafactor")
  expect_match(made, "keras3::optimizer_adafactor()", fixed = TRUE)
  expect_match(made, '[1] "bfloat16"', fixed = TRUE)
  expect_equal(keras3::config_dtype_policy()$name, "float32")  # set back
})

test_that("in a fresh non-interactive session the examples leave Python unstarted", {
  skip_without_python()
  result <- run_r(paste(
    "library(adafactor)",
    "example('adafactor_memory', package = 'adafactor', ask = FALSE)",
    "cat('started:', reticulate::py_available(), '\\n')", sep = "; "))
  expect_match(paste(result$output, collapse = "\n"), "started: FALSE", fixed = TRUE)
})
