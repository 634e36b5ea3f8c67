#' @keywords internal
#' @details
#' A keras3 extension: the namespace imports keras3's, so that even
#' `adafactor::optimizer_adafactor()` without `library()` loads keras3 first,
#' whose `.onLoad` declares the Python that Keras needs before Python starts.
#' @importFrom keras3 keras
"_PACKAGE"
