# The chart of bench/lm_bfloat16.py: the training loss of each run against
# the step, one panel a backend, with the held-out loss and the bytes of the
# weights and optimizer state in the legend.
# Usage: Rscript lm_bfloat16_chart.R <curves.csv> <table.csv> <chart.png>
args <- commandArgs(trailingOnly = TRUE)
curves <- utils::read.csv(args[[1]], stringsAsFactors = FALSE)
table <- utils::read.csv(args[[2]], stringsAsFactors = FALSE)
backends <- unique(curves$backend)
runs <- unique(curves$run)
# Okabe and Ito's colours, told apart by colour-blind readers too.
colours <- rep(c("black", "#D55E00", "#E69F00", "#0072B2", "#56B4E9", "#009E73",
                 "#CC79A7"), length.out = length(runs))
png(args[[3]], width = 550 * length(backends) + 250, height = 550, type = "cairo")
par(mfrow = c(1, length(backends)), mar = c(5, 5, 3, 1))
for (backend in backends) {
  here <- curves[curves$backend == backend, ]
  graphics::plot(range(here$step), range(here$loss), type = "n", log = "y",
                 xlab = "step", ylab = "training loss (cross-entropy, nats a byte)",
                 main = sprintf("GPT-2 byte-level LM on the Python stdlib (%s)", backend))
  for (i in seq_along(runs)) {
    run <- here[here$run == runs[[i]], ]
    graphics::lines(run$step, run$loss, col = colours[[i]], lwd = 2)
  }
  rows <- table[table$backend == backend, ]
  labels <- sprintf("%s: held-out %.3f, weights + state %.1f MiB", rows$run,
                    rows$held_out_loss, rows$weights_and_state_mib)
  graphics::legend("right", legend = labels, col = colours[match(rows$run, runs)],
                   lwd = 2, bty = "n", cex = 0.85)
}
invisible(grDevices::dev.off())
