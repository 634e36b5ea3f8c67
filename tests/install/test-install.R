# The package installed the ways R users install a package that is not on
# CRAN, from the repository's own files and nothing else (no make): each into
# a fresh library, then a fresh R session with keras3's own Python trains a
# small model with optimizer_adafactor(). The source is a clean copy of the
# files git holds (tracked and not ignored, as in this working tree), so a
# file that only `make` would write is not there.
#
#   Rscript -e 'testthat::test_file("tests/install/test-install.R")'  (make test-install)

root <- normalizePath(Sys.getenv("ADAFACTOR_ROOT", file.path("..", "..")))
rscript <- file.path(R.home("bin"), "Rscript")
r_command <- file.path(R.home("bin"), "R")

# Run a program; stop with its output when it fails.
run <- function(command, args, folder = tempdir(), env = character()) {
  dir.create(folder, showWarnings = FALSE)
  old <- setwd(folder)
  on.exit(setwd(old))
  output <- suppressWarnings(system2("env", shQuote(c(env, command, args)),
                                     stdout = TRUE, stderr = TRUE))
  status <- attr(output, "status") %||% 0L
  list(output = paste(output, collapse = "\n"), status = status)
}

must <- function(result, what) {
  if (result$status != 0) stop(what, " failed:\n", result$output, call. = FALSE)
  result
}

`%||%` <- function(x, y) if (is.null(x)) y else x

# A clean clone of the working tree: the files git would hold, committed
# into a repository of their own (install_git() clones from it).
clean_clone <- function() {
  listed <- must(run("git", c("-C", root, "ls-files", "--cached", "--others",
                              "--exclude-standard")), "git ls-files")
  files <- strsplit(listed$output, "\n", fixed = TRUE)[[1]]
  files <- files[nzchar(files) & file.exists(file.path(root, files))]
  clone <- file.path(tempfile("clone-"), "adafactor")
  for (file in files) {
    dir.create(dirname(file.path(clone, file)), recursive = TRUE,
               showWarnings = FALSE)
    file.copy(file.path(root, file), file.path(clone, file))
  }
  git <- c("-c", "user.name=test", "-c", "user.email=test@example.org")
  must(run("git", c("init", "-q", clone)), "git init")
  must(run("git", c(git, "-C", clone, "add", "-A")), "git add")
  must(run("git", c(git, "-C", clone, "commit", "-q", "-m", "clone")), "git commit")
  clone
}

# remotes::`install`(`source`) into `library`, in a fresh R session, the
# dependencies as they are.
remotes <- function(install, source, library) {
  run(rscript, c("-e", sprintf(
    "remotes::%s('%s', lib = '%s', dependencies = FALSE, upgrade = 'never', force = TRUE)",
    install, source, library)))
}

# The ways of installing `source` into `library`.
installs <- list(
  "R CMD INSTALL of the clone" = function(source, library) {
    run(r_command, c("CMD", "INSTALL", paste0("--library=", library), source))
  },
  "R CMD build, then R CMD INSTALL of the tarball" = function(source, library) {
    folder <- tempfile("build-")
    built <- run(r_command, c("CMD", "build", source), folder = folder)
    if (built$status != 0) return(built)
    tarball <- list.files(folder, "^adafactor_.*\\.tar\\.gz$", full.names = TRUE)
    run(r_command, c("CMD", "INSTALL", paste0("--library=", library), tarball))
  },
  "remotes::install_local()" = function(source, library) {
    remotes("install_local", source, library)
  },
  "remotes::install_git()" = function(source, library) {
    remotes("install_git", paste0("file://", source), library)
  }
)

# In a fresh R session whose first library is `library`: attach adafactor,
# train a small model, report where the package and its Python module came
# from and the losses (or the error).
train_from <- function(library) {
  out <- tempfile(fileext = ".rds")
  code <- paste(
    sprintf("OUT <- '%s'", out),
    "library(adafactor)",
    "set_random_seed(1)",
    "model <- keras_model_sequential(input_shape = 4) |> layer_dense(3)",
    "result <- tryCatch({",
    "  model |> compile(optimizer = optimizer_adafactor(learning_rate = 0.1), loss = 'mse')",
    "  x <- matrix(seq(-1, 1, length.out = 64), 16, 4)",
    "  history <- model |> fit(x, x[, 1:3] * 2, epochs = 5, verbose = 0)",
    "  list(loss = history$metrics$loss, optimizer = class(model$optimizer)[[1]],",
    "       module = adafactor:::python_module()$`__file__`)",
    "}, error = function(e) list(error = conditionMessage(e)))",
    "result$package <- find.package('adafactor')",
    "saveRDS(result, OUT)",
    sep = "\n")
  session <- run(rscript, c("-e", code), folder = tempfile("session-"),
                 env = c("-u", "RETICULATE_PYTHON", "-u", "VIRTUAL_ENV",
                         paste0("R_LIBS=", library)))
  if (!file.exists(out)) stop("the fresh R session failed:\n", session$output)
  readRDS(out)
}

expect_trains_from <- function(result, library, label) {
  expect_null(result$error, label = paste(label, "error"))
  expect_identical(normalizePath(result$package),
                   normalizePath(file.path(library, "adafactor")), label = label)
  expect_identical(result$optimizer, "adafactor.optimizer.Adafactor", label = label)
  expect_true(startsWith(normalizePath(result$module),
                         normalizePath(file.path(library, "adafactor"))),
              label = paste(label, "module"))
  expect_true(all(is.finite(result$loss)), label = label)
  expect_lt(tail(result$loss, 1), result$loss[[1]], label = label)
}

clone <- clean_clone()

for (way in names(installs)) {
  test_that(paste("installed by", way, "it trains"), {
    library <- tempfile("library-")
    dir.create(library)
    must(installs[[way]](clone, library), way)
    expect_trains_from(train_from(library), library, way)
  })
}

test_that("with its Python module left out, the package says it is incomplete", {
  # The planted defect: what R installs lacks the module (as an install from
  # the repository did before the module lived in inst/python).
  broken <- file.path(tempfile("broken-"), "adafactor")
  dir.create(dirname(broken))
  file.copy(clone, dirname(broken), recursive = TRUE)
  unlink(file.path(broken, "inst", "python"), recursive = TRUE)
  library <- tempfile("library-")
  dir.create(library)
  must(installs[["R CMD INSTALL of the clone"]](broken, library), "install")
  result <- train_from(library)
  expect_false(is.null(result$error)) # the check above would fail
  expect_match(result$error, "adafactor R package is incomplete", fixed = TRUE)
  expect_match(result$error, "reinstall", ignore.case = TRUE)
  expect_no_match(result$error, "keras3::install_keras", fixed = TRUE)
})
