# The bar chart of bench/fit_peak.py: peak memory of fit() above SGD's, as a
# multiple of the parameter bytes, by optimizer, for each model and backend.
# Usage: Rscript fit_peak_chart.R <table.csv> <chart.png>
args <- commandArgs(trailingOnly = TRUE)
rows <- utils::read.csv(args[[1]], stringsAsFactors = FALSE)
rows$panel <- paste(rows$model, rows$backend, rows$device, sep = "\n")
panels <- unique(rows$panel)
optimizers <- unique(rows$optimizer)
heights <- sapply(panels, function(panel) {
  here <- rows[rows$panel == panel, ]
  here$above_sgd_x_parameters[match(optimizers, here$optimizer)]
})
heights <- matrix(heights, nrow = length(optimizers), dimnames = list(optimizers, panels))
png(args[[2]], width = 1100, height = 550, type = "cairo")
par(mar = c(6, 5, 3, 1), mgp = c(3, 2.5, 0))
colours <- grDevices::hcl.colors(length(optimizers), "Set 2")
graphics::barplot(heights, beside = TRUE, col = colours, las = 1,
                  ylab = "peak of fit() above SGD's, x parameter bytes",
                  main = "Memory of fit(): what each optimizer adds to SGD's peak")
graphics::legend("topleft", legend = optimizers, fill = colours, bty = "n", cex = 0.9)
invisible(grDevices::dev.off())
