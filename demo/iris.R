# The main job: train a small Keras classifier on R's built-in `iris` data
# with optimizer_adafactor(), through reticulate. No network at run time.
library(adafactor)

# reticulate 1.28 takes any pyproject.toml at the project root (ours describes
# the Python package) for a Poetry project and warns; look elsewhere.
options(reticulate.poetry.project = tempdir())

keras <- reticulate::import("keras")
seed <- 20261128L
set.seed(seed)
keras$utils$set_random_seed(seed)

# Standardised features (with the training split's centre and scale) and a
# stratified 80/20 held-out split.
held_out <- unlist(lapply(split(seq_len(nrow(iris)), iris$Species),
                          function(rows) sample(rows, length(rows) %/% 5)))
features <- as.matrix(iris[, 1:4])
train_x <- scale(features[-held_out, ])
test_x <- scale(features[held_out, ],
                center = attr(train_x, "scaled:center"),
                scale = attr(train_x, "scaled:scale"))
# Labels as 1-d arrays: reticulate turns an R array into a NumPy array (a
# plain vector would become a Python list).
labels <- as.integer(iris$Species) - 1L
train_y <- as.array(labels[-held_out])
test_y <- as.array(labels[held_out])

build_model <- function() {
  keras$Sequential(list(
    keras$Input(shape = list(4L)),
    keras$layers$Dense(16L, activation = "relu"),
    keras$layers$Dense(8L, activation = "relu"),
    keras$layers$Dense(3L, activation = "softmax")
  ))
}

model <- build_model()
optimizer <- optimizer_adafactor(learning_rate = 0.03)
model$compile(optimizer = optimizer,
              loss = "sparse_categorical_crossentropy",
              metrics = list("accuracy"))
history <- model$fit(train_x, train_y, epochs = 30L, batch_size = 32L,
                     validation_data = list(test_x, test_y), verbose = 2L)

evaluation <- model$evaluate(test_x, test_y, verbose = 0L, return_dict = TRUE)
cat(sprintf("\nHeld-out accuracy: %.3f (%d of %d flowers)\n",
            evaluation$accuracy, round(evaluation$accuracy * length(test_y)),
            length(test_y)))

# Optimizer state beside Adam's, on the same model: the factored second
# moment keeps n + m numbers for an n x m kernel.
state_numbers <- function(opt) {
  opt$build(model$trainable_variables)
  sizes <- vapply(opt$variables, function(v) {
    length(v$numpy())
  }, numeric(1))
  sum(sizes) - 2  # without the iteration count and the learning rate
}
parameters <- sum(vapply(model$trainable_variables, function(v) {
  length(v$numpy())
}, numeric(1)))
ours <- state_numbers(optimizer_adafactor())
adam <- state_numbers(keras$optimizers$Adam())
cat(sprintf("Parameters: %d\n", parameters))
cat(sprintf("Optimizer state: adafactor %d numbers (%.2f x parameters), Adam %d (%.2f x)\n",
            ours, ours / parameters, adam, adam / parameters))

# The loss curves, with R's own png() device.
output <- "output"
dir.create(output, showWarnings = FALSE, recursive = TRUE)
plot_path <- file.path(output, "iris-loss.png")
loss <- unlist(history$history$loss)
val_loss <- unlist(history$history$val_loss)
png(plot_path, width = 800, height = 500, type = "cairo")
plot(loss, type = "l", lwd = 2, col = "steelblue", ylim = range(loss, val_loss),
     xlab = "epoch", ylab = "cross-entropy",
     main = "iris: optimizer_adafactor(learning_rate = 0.03)")
lines(val_loss, lwd = 2, col = "darkorange")
legend("topright", c("training", "held-out"), lwd = 2,
       col = c("steelblue", "darkorange"), bty = "n")
invisible(dev.off())
cat("Loss curve written to", normalizePath(plot_path), "\n")

if (evaluation$accuracy < 0.9) {
  stop("held-out accuracy below 0.9", call. = FALSE)
}
