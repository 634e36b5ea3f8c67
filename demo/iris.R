# The main job: train a small Keras classifier on R's built-in `iris` data
# with optimizer_adafactor(), in keras3's idioms, in whatever Python keras3
# chooses. No network at run time beyond keras3's first environment set-up.
library(adafactor) # attaches keras3 too

seed <- 20261128L
set.seed(seed)
set_random_seed(seed)

# Standardised features (with the training split's centre and scale) and a
# stratified 80/20 held-out split.
held_out <- unlist(lapply(split(seq_len(nrow(iris)), iris$Species),
                          function(rows) sample(rows, length(rows) %/% 5)))
features <- as.matrix(iris[, 1:4])
train_x <- scale(features[-held_out, ])
test_x <- scale(features[held_out, ],
                center = attr(train_x, "scaled:center"),
                scale = attr(train_x, "scaled:scale"))
labels <- as.integer(iris$Species) - 1L
train_y <- labels[-held_out]
test_y <- labels[held_out]

build_model <- function() {
  keras_model_sequential(input_shape = 4) |>
    layer_dense(16, activation = "relu") |>
    layer_dense(8, activation = "relu") |>
    layer_dense(3, activation = "softmax")
}

model <- build_model() |>
  compile(optimizer = optimizer_adafactor(learning_rate = 0.03),
          loss = "sparse_categorical_crossentropy",
          metrics = "accuracy")
history <- model |>
  fit(train_x, train_y, epochs = 30, batch_size = 32,
      validation_data = list(test_x, test_y), verbose = 2)

evaluation <- model |> evaluate(test_x, test_y, verbose = 0)
cat(sprintf("\nHeld-out accuracy: %.3f (%d of %d flowers)\n",
            evaluation$accuracy, round(evaluation$accuracy * length(test_y)),
            length(test_y)))

# Optimizer state beside Adam's, on the same model: the factored second
# moment keeps n + m numbers for an n x m kernel.
state_numbers <- function(optimizer) {
  optimizer$build(model$trainable_variables)
  sizes <- vapply(optimizer$variables, function(v) length(v$numpy()), numeric(1))
  sum(sizes) - 2 # without the iteration count and the learning rate
}
parameters <- count_params(model)
ours <- state_numbers(optimizer_adafactor())
adam <- state_numbers(optimizer_adam())
cat(sprintf("Parameters: %d\n", parameters))
cat(sprintf(paste("Optimizer state: adafactor %d numbers (%.2f x parameters),",
                  "Adam %d (%.2f x)\n"),
            ours, ours / parameters, adam, adam / parameters))

# keras3's plot of the history (ggplot2 where installed, base graphics
# otherwise), written with R's own png() device.
output <- "output"
dir.create(output, showWarnings = FALSE, recursive = TRUE)
plot_path <- file.path(output, "iris-history.png")
png(plot_path, width = 800, height = 600, type = "cairo")
plotted <- plot(history)
if (inherits(plotted, "ggplot")) print(plotted)
invisible(dev.off())
cat("Training history plotted to", normalizePath(plot_path), "\n")

if (evaluation$accuracy < 0.9) {
  stop("held-out accuracy below 0.9", call. = FALSE)
}
