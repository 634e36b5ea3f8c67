reference_usage <- function() {
  path <- system.file("reference", "optimizer_adafactor.txt",
                      package = "adafactor")
  text <- paste(readLines(path), collapse = "\n")
  usage <- regmatches(text, regexpr("optimizer_adafactor\\((.*?)\n\\)", text))
  as.list(str2lang(usage))[-1]
}

test_that("the formals are the reference page's Usage: names, order, defaults", {
  usage <- reference_usage()
  usage_names <- names(usage)
  usage_names[usage_names == ""] <- "..."  # `...` is written unnamed
  expect_identical(names(formals(optimizer_adafactor)), usage_names)
  actual <- formals(optimizer_adafactor)
  for (name in setdiff(usage_names, "...")) {
    expect_identical(actual[[name]], usage[[name]], label = name)
  }
  expect_identical(which(usage_names == "..."), 15L)
})

test_that("the help page documents every argument, the value and the reference", {
  rd <- tools::Rd_db("adafactor")[["optimizer_adafactor.Rd"]]
  text <- paste(as.character(rd), collapse = "")
  arguments <- tools:::.Rd_get_argument_names(rd)
  expect_setequal(arguments, names(formals(optimizer_adafactor)))
  tags <- vapply(rd, function(section) attr(section, "Rd_tag"), character(1))
  description <- paste(unlist(rd[tags == "\\description"]), collapse = "")
  expect_match(description, "Adafactor is commonly used in NLP tasks", fixed = TRUE)
  expect_match(description, "The default argument setup is based on the original paper",
               fixed = TRUE)
  expect_match(text, "an Optimizer instance", fixed = TRUE)
  expect_match(text, "Shazeer", fixed = TRUE)
  expect_match(text, "1804.04235", fixed = TRUE)
  expect_match(text, "relative_step = FALSE", fixed = TRUE)
  for (extra in c("scale_parameter", "warmup_init", "beta_1",
                  "min_dim_size_to_factor", "factored")) {
    expect_match(text, extra, fixed = TRUE)
  }
})
