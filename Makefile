# `make demo` and `make test` do all the set-up on a fresh machine: Debian's
# R, the keras3 stack, the test suite's Python environments, the R package.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# The test suite's Python environments, in the checkout: the newest releases
# (constraints/latest.txt) and the lowest versions pyproject.toml declares
# (constraints/lowest.txt). Neither is the R package's: R runs in whatever
# Python keras3 chooses.
VENV := .venv
LOWEST := .venv-lowest
# XLA:TPU and XLA:GPU, compiling here without the hardware
# (constraints/accelerators.txt): libtpu and the CUDA plugin stay out of
# the other environments, where JAX would probe for their devices.
ACCELERATORS := .venv-accelerators
PY := $(VENV)/bin/python
PIP_INSTALL = -m pip install -q --disable-pip-version-check
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
VERSION := $(shell sed -n 's/^Version: //p' DESCRIPTION)
TARBALL := adafactor_$(VERSION).tar.gz
R_SOURCES := DESCRIPTION $(wildcard R/*.R) $(shell find inst/python/adafactor -name '*.py')

# Debian's R and what the keras3 stack needs from Debian; keras3, reticulate
# (>= 1.42) and their CRAN-only dependencies come from CRAN where reachable,
# else from a CRAN-like copy: LOCAL_CRAN (make LOCAL_CRAN=/path, or the
# environment), by default the one beside this checkout.
R_DEBIAN := r-base-core r-base-dev r-cran-testthat r-cran-roxygen2 \
  r-cran-matrix r-cran-rcpp r-cran-rcpptoml r-cran-here r-cran-jsonlite \
  r-cran-png r-cran-rappdirs r-cran-rlang r-cran-withr r-cran-processx \
  r-cran-yaml r-cran-rstudioapi r-cran-lifecycle r-cran-base64enc \
  r-cran-magrittr r-cran-whisker r-cran-tidyselect r-cran-backports \
  r-cran-generics r-cran-zeallot r-cran-fastmap r-cran-glue r-cran-cli \
  r-cran-lintr r-cran-covr r-cran-pkgdown r-cran-bslib r-cran-rmarkdown \
  r-cran-png r-cran-xml2 r-cran-remotes chromium
CRAN := https://cloud.r-project.org
LOCAL_CRAN ?= $(CURDIR)/../shared/r-repo

# R sessions get keras3's own Python: reticulate's py_require() environment,
# built by uv (from the test environment; reticulate would otherwise fetch
# uv itself). uv may not download a Python here: it uses the machine's.
export RETICULATE_UV := $(CURDIR)/$(VENV)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST := -m pytest -q -p no:cacheprovider
PYTESTS := tests/python --ignore=tests/python/test_parity.py
COVERED := $(PY) -m coverage run -p --source=adafactor $(PYTEST)
# Line coverage floors: `make coverage` measured 100% for both (2026-11-29);
# the floors are the project's minimums, so a refactor need not add tests
# for every line it moves.
PYTHON_COVERAGE_FLOOR := 95
R_COVERAGE_FLOOR := 90

.PHONY: demo test lint coverage site test-python test-lowest test-user-env \
  test-install test-accelerators test-r test-parity test-site check bench bench-device mutants setup document clean \
  will-it-fit
demo: setup
	cd demo && Rscript iris.R

test: setup lint test-python test-lowest test-user-env test-install test-accelerators test-r test-parity check \
  test-site coverage

# ruff (pyproject.toml) and lintr (.lintr), one line length for both.
lint: setup
	$(PY) -m ruff check inst/python tests bench
	$(PY) -m ruff format --check inst/python tests bench
	Rscript -e 'lints <- lintr::lint_package(); print(lints); quit(status = length(lints) > 0)'

setup: .stamps/r-package .stamps/python

.stamps/r-system:
	@mkdir -p .stamps
	if ! command -v Rscript >/dev/null || ! command -v chromium >/dev/null || ! Rscript -e 'quit(status = !all(c("testthat", "roxygen2", "lintr", "covr", "pkgdown", "remotes") %in% rownames(installed.packages())))'; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(R_DEBIAN); \
	fi
	if ! Rscript -e 'quit(status = !(requireNamespace("keras3", quietly = TRUE) && packageVersion("reticulate") >= "1.42"))'; then \
	  repo=$(CRAN); curl -sfm 10 -o /dev/null $(CRAN)/src/contrib/PACKAGES.rds || repo=file://$(LOCAL_CRAN); \
	  if [ "$$repo" != $(CRAN) ] && [ ! -d $(LOCAL_CRAN) ]; then \
	    echo "CRAN is not reachable and LOCAL_CRAN=$(LOCAL_CRAN) is not a folder: set LOCAL_CRAN to a CRAN-like copy of the keras3 stack" >&2; exit 1; \
	  fi; \
	  echo "installing keras3 and reticulate from $$repo"; \
	  $(SUDO) Rscript -e "install.packages(c('reticulate', 'keras3'), repos = '$$repo', Ncpus = 2)"; \
	fi
	touch $@

# Roxygen docs, the tarball, and the installed R package. The Python
# package lives where R ships it (inst/python/adafactor), so the repository
# installs as it is; the build leaves out its caches (.Rbuildignore).
.stamps/r-package: .stamps/r-system $(R_SOURCES)
	Rscript -e 'roxygen2::roxygenise()' >/dev/null
	R CMD build --no-build-vignettes . >/dev/null
	$(SUDO) R CMD INSTALL --no-multiarch $(TARBALL) >/dev/null
	touch $@

# The test environment: the newest releases, every backend, rpy2 (built
# against Debian's R), uv; the checkout installed editable.
.stamps/python: .stamps/r-system pyproject.toml constraints/latest.txt
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) $(PIP_INSTALL) -c constraints/latest.txt -e '.[tensorflow,jax,torch,test]' tensorflow_cpu rpy2 uv ruff coverage
	touch $@

.stamps/lowest: pyproject.toml constraints/lowest.txt
	[ -x $(LOWEST)/bin/python ] || python3 -m venv $(LOWEST)
	$(LOWEST)/bin/python $(PIP_INSTALL) -c constraints/lowest.txt -e '.[jax,torch]' tensorflow_cpu pytest hypothesis
	touch $@

.stamps/accelerators: pyproject.toml constraints/accelerators.txt
	[ -x $(ACCELERATORS)/bin/python ] || python3 -m venv $(ACCELERATORS)
	$(ACCELERATORS)/bin/python $(PIP_INSTALL) -c constraints/accelerators.txt -e . \
	  'jax[tpu]' jax-cuda12-plugin jax-cuda12-pjrt keras-hub pytest coverage
	touch $@

document: .stamps/r-system
	Rscript -e 'roxygen2::roxygenise()'

# Under coverage.py: the three backends' data are combined by `coverage`.
# The backends' suites two at a time (tests/two_at_once.sh), longest first.
test-python: setup
	rm -f .coverage .coverage.*
	tests/two_at_once.sh "KERAS_BACKEND=tensorflow $(COVERED) $(PYTESTS)" \
	  "KERAS_BACKEND=jax $(COVERED) -m backend $(PYTESTS)" \
	  "KERAS_BACKEND=torch $(COVERED) -m backend $(PYTESTS)"

# The backend tests on the lowest declared versions (NumPy 1.26, Keras 3.10).
test-lowest: .stamps/lowest
	tests/two_at_once.sh "KERAS_BACKEND=torch $(LOWEST)/bin/python $(PYTEST) -m backend $(PYTESTS)" \
	  "KERAS_BACKEND=jax $(LOWEST)/bin/python $(PYTEST) -m backend $(PYTESTS)" \
	  "KERAS_BACKEND=tensorflow $(LOWEST)/bin/python $(PYTEST) -m backend $(PYTESTS)"

# pip install of the checkout into a user's own fresh environment.
test-user-env: setup
	$(PY) $(PYTEST) tests/user_env

# fit()'s JAX step compiled for XLA:TPU and XLA:GPU: each device's peak
# within the targets, and the compiled memory report (tests/accelerators).
# Under coverage.py too: its data join test-python's in `coverage`.
test-accelerators: .stamps/accelerators
	rm -f .coverage.accelerators*
	$(ACCELERATORS)/bin/python -m coverage run -p --source=adafactor \
	  --data-file=.coverage.accelerators $(PYTEST) tests/accelerators

# The R package installed from a clean copy of the repository's files, the
# ways R users install (R CMD INSTALL, R CMD build, remotes), each trained
# from in a fresh R session with keras3's own Python.
test-install: setup
	ADAFACTOR_ROOT=$(CURDIR) Rscript -e 'testthat::test_file("tests/install/test-install.R", stop_on_failure = TRUE)'

# In keras3's own Python (no RETICULATE_PYTHON); the tests that choose
# another Python take the test environment's. Under covr, which installs an
# instrumented copy of the package and fails on a failed test; the line
# coverage is kept for `coverage`.
test-r: setup .stamps/accelerators
	env -u RETICULATE_PYTHON ADAFACTOR_OTHER_PYTHON=$(CURDIR)/$(PY) \
	  ADAFACTOR_ACCELERATOR_PYTHON=$(CURDIR)/$(ACCELERATORS)/bin/python Rscript -e \
	  'saveRDS(covr::package_coverage(type = "tests", quiet = FALSE), ".stamps/r-coverage.rds")'

# Python (the three backends of test-python combined) and R (test-r) line
# coverage; fails below the floors.
coverage: test-python test-accelerators test-r
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --fail-under=$(PYTHON_COVERAGE_FLOOR)
	Rscript -e 'library(covr); coverage <- readRDS(".stamps/r-coverage.rds"); print(coverage)' \
	  -e 'percent <- covr::percent_coverage(coverage)' \
	  -e 'cat(sprintf("R line coverage: %.1f%% (floor $(R_COVERAGE_FLOOR)%%)\n", percent))' \
	  -e 'quit(status = percent < $(R_COVERAGE_FLOOR))'

# rpy2 and reticulate in one Python process (the test environment's).
test-parity: setup
	KERAS_BACKEND=tensorflow $(PY) $(PYTEST) tests/python/test_parity.py
	KERAS_BACKEND=jax $(PY) $(PYTEST) tests/python/test_parity.py -k memory_report

# The tests ran just before, on the installed package (test-r): the check
# builds, installs, runs the examples and checks the docs, as CRAN would
# (--as-cran; no network: remote checks and the clock off). It fails on any
# WARNING or NOTE but the new-submission one (the maintainer's address).
check: setup
	rm -rf adafactor.Rcheck
	_R_CHECK_SYSTEM_CLOCK_=0 _R_CHECK_CRAN_INCOMING_REMOTE_=false \
	  R CMD check --as-cran --no-manual --no-tests $(TARBALL)
	! grep -E '^\* checking .*\.\.\. (WARNING|NOTE)' adafactor.Rcheck/00check.log \
	  | grep -v 'CRAN incoming feasibility'

# The pkgdown site, Bootstrap 5 (its CSS ships with it), built offline.
# Python is started first, so that the reference pages show their examples
# run (they run only where Python has started: R CMD check does not start it).
site: setup
	Rscript -e 'options(pkgdown.internet = FALSE); stopifnot(adafactor::adafactor_available())' \
	  -e 'pkgdown::build_site(new_process = FALSE, install = FALSE)'
	@echo "Site built: $(CURDIR)/docs/index.html (reference: docs/reference/optimizer_adafactor.html)"

# The reference page as a reader sees it, in headless Chromium.
test-site: site
	ADAFACTOR_SITE=$(CURDIR)/docs Rscript -e 'testthat::test_file("tests/site/test-site.R", stop_on_failure = TRUE)'

# Each part writes its tables to bench/results/ (dated, with versions): the
# site's benchmarks article reads them.
bench: setup
	KERAS_BACKEND=tensorflow $(PY) bench/bench.py --write
	KERAS_BACKEND=jax $(PY) bench/bench.py --write
	$(PY) bench/fit_peak.py
	$(PY) bench/per_device.py
	$(PY) bench/lm_bfloat16.py
	$(MAKE) .stamps/accelerators
	$(ACCELERATORS)/bin/python bench/accelerator_memory.py
	$(MAKE) will-it-fit

# The memory article's worked example, run from Python and from R (with the
# accelerator environment's Python), its output kept with the date, the
# versions and the seconds it took.
will-it-fit: .stamps/accelerators .stamps/r-package
	bench/will_it_fit.sh python $(ACCELERATORS)/bin/python bench/will_it_fit.py
	bench/will_it_fit.sh r env RETICULATE_PYTHON=$(CURDIR)/$(ACCELERATORS)/bin/python \
	  Rscript bench/will_it_fit.R

# On a machine with a GPU (and GPU builds of JAX, TensorFlow and PyTorch in
# the Python it runs in, PYTHON=...): each optimizer's step time and fit()
# peak on that GPU, one CSV (bench/output/device_check.csv). Its tiny CPU
# mode runs in `make test` (tests/python/test_device_check.py).
bench-device:
	$(or $(PYTHON),$(PY)) bench/device_check.py

# Planted defects: the tests must catch each one (slow, so not in `test`).
mutants: setup
	$(PY) tests/mutants.py

clean:
	rm -rf .stamps adafactor.Rcheck $(TARBALL) docs .coverage*
