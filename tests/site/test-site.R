# The reference page of optimizer_adafactor() as a reader sees it: the built
# site (make site) opened offline in headless Chromium, its screenshot and
# the page it rendered.

site <- Sys.getenv("ADAFACTOR_SITE", file.path("..", "..", "docs"))
page <- normalizePath(file.path(site, "reference", "optimizer_adafactor.html"))

chromium <- function(...) {
  profile <- tempfile("chromium-")
  # No background networking: this machine has no network to reach.
  flags <- c("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             paste0("--user-data-dir=", profile), "--window-size=1280,2400")
  output <- system2("chromium", c(flags, ..., paste0("file://", page)),
                    stdout = TRUE, stderr = FALSE)
  unlink(profile, recursive = TRUE)
  output
}

rendered <- xml2::read_html(paste(chromium("--dump-dom"), collapse = "\n"))
text_of <- function(xpath) xml2::xml_text(xml2::xml_find_all(rendered, xpath))

test_that("the page renders styled, with the CSS the site ships", {
  screenshot <- tempfile(fileext = ".png")
  chromium(paste0("--screenshot=", screenshot))
  image <- png::readPNG(screenshot)
  expect_identical(dim(image)[1:2], c(2400L, 1280L))
  # Bootstrap 5's navbar paints the top of the page; unstyled, it is white.
  navbar <- image[1:50, , 1:3]
  white <- mean(apply(navbar, c(1, 2), function(pixel) all(pixel > 0.999)))
  expect_lt(white, 0.5)
  css <- xml2::xml_attr(xml2::xml_find_all(rendered, "//link[@rel='stylesheet']"), "href")
  bootstrap <- grep("bootstrap", css, value = TRUE)
  expect_length(bootstrap, 1L)
  expect_false(grepl("^https?:", bootstrap))
  expect_true(file.exists(file.path(dirname(page), bootstrap)))
})

test_that("the page shows the Usage block and every argument", {
  usage <- text_of("//h2[.='Usage']/following-sibling::*[1]")
  expect_match(usage, "optimizer_adafactor(", fixed = TRUE)
  arguments <- setdiff(names(formals(adafactor::optimizer_adafactor)), "...")
  expect_length(arguments, 16L)
  shown <- trimws(text_of("//h2[.='Arguments']/following-sibling::dl/dt"))
  for (argument in arguments) {
    expect_match(usage, paste0(argument, " = "), fixed = TRUE, label = argument)
    expect_true(argument %in% shown, label = argument)
  }
})

test_that("the page has the reference page's sections and this package's own", {
  headings <- trimws(text_of("//main//h2"))
  for (section in c("Usage", "Arguments", "Value", "References", "See also",
                    "Memory and differences from Keras 3.15",
                    "Masking keras3's optimizer_adafactor()",
                    "Sparse gradients", "Additional arguments (...)",
                    "Examples")) {
    expect_true(section %in% headings, label = section)
  }
})

# Every page of the site as a reader gets it: opened in headless Chromium.
rendered_page <- function(path) {
  profile <- tempfile("chromium-")
  flags <- c("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             paste0("--user-data-dir=", profile), "--dump-dom")
  dom <- system2("chromium", c(flags, paste0("file://", normalizePath(path))),
                 stdout = TRUE, stderr = FALSE)
  unlink(profile, recursive = TRUE)
  xml2::read_html(paste(dom, collapse = "\n"))
}

articles <- unlist(lapply(yaml::read_yaml(file.path(site, "..", "_pkgdown.yml"))$articles,
                          `[[`, "contents"))

test_that("every article of _pkgdown.yml is a page with its title and no R error", {
  expect_gte(length(articles), 8L)
  for (article in articles) {
    path <- file.path(site, paste0(article, ".html"))
    expect_true(file.exists(path), label = article)
    page <- rendered_page(path)
    title <- trimws(xml2::xml_text(xml2::xml_find_first(page, "//main//h1")))
    expect_true(nzchar(title), label = article)
    text <- xml2::xml_text(xml2::xml_find_all(page, "//main"))
    expect_false(grepl("Error in ", text, fixed = TRUE), label = article)
    images <- xml2::xml_attr(xml2::xml_find_all(page, "//main//img"), "src")
    images <- images[nzchar(images) & !grepl("^data:", images)]
    expect_true(all(file.exists(file.path(dirname(path), images))), label = article)
  }
})

test_that("the benchmark figures come from the results files make bench writes", {
  page <- rendered_page(file.path(site, "articles", "benchmarks.html"))
  tables <- xml2::xml_find_all(page, "//main//table")
  expect_gte(length(tables), 2L)
  peaks <- utils::read.csv(file.path(site, "..", "bench", "results", "fit_peak.csv"))
  shown <- xml2::xml_text(tables[[1]])
  for (peak in peaks$peak_mib) {
    expect_match(shown, as.character(peak), fixed = TRUE)
  }
  expect_match(xml2::xml_text(xml2::xml_find_first(page, "//main")),
               paste("Measured", peaks$date[[1]]), fixed = TRUE)
  # The bfloat16 language model's table, by its caption-free column text.
  lm <- utils::read.csv(file.path(site, "..", "bench", "results", "lm_bfloat16.csv"))
  lm_table <- Filter(function(t) grepl("held-out loss", xml2::xml_text(t), fixed = TRUE),
                     tables)
  expect_length(lm_table, 1L)
  for (loss in format(lm$held_out_loss)) {
    expect_match(xml2::xml_text(lm_table[[1]]), trimws(loss), fixed = TRUE)
  }
  images <- xml2::xml_attr(xml2::xml_find_all(page, "//main//img"), "src")
  images <- images[nzchar(images)]
  expect_gte(length(images), 2L)
  expect_true(all(file.exists(file.path(site, "articles", images))), label = toString(images))
})

test_that("the home page's links to the site's pages and its chart resolve", {
  home <- file.path(site, "index.html")
  page <- rendered_page(home)
  links <- xml2::xml_attr(xml2::xml_find_all(page, "//main//a[@href]"), "href")
  local <- links[!grepl("^(https?:|#|mailto:)", links)]
  expect_gte(sum(grepl("^articles/", local)), 8L)
  for (link in sub("#.*$", "", local)) {
    expect_true(file.exists(file.path(site, link)), label = link)
  }
  images <- xml2::xml_attr(xml2::xml_find_all(page, "//main//img"), "src")
  images <- images[nzchar(images)]
  expect_gte(length(images), 1L)
  expect_true(all(file.exists(file.path(site, images))), label = toString(images))
})
