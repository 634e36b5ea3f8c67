# `make demo` and `make test` do all the set-up on a fresh machine: Debian's R
# packages, the Python environment with pinned versions, the R package.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# The environment install_adafactor() creates and library(adafactor) finds.
VENV ?= $(or $(WORKON_HOME),$(HOME)/.virtualenvs)/r-adafactor
PY := $(VENV)/bin/python
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
VERSION := $(shell sed -n 's/^Version: //p' DESCRIPTION)
TARBALL := adafactor_$(VERSION).tar.gz
R_SOURCES := DESCRIPTION $(wildcard R/*.R) $(shell find python/adafactor -name '*.py') pyproject.toml README.md
R_PACKAGES := r-base-core r-base-dev r-cran-reticulate r-cran-testthat r-cran-roxygen2
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: demo test test-python test-r test-parity check bench setup document clean
demo: setup
	cd demo && Rscript iris.R

test: setup test-python test-r test-parity check

# The R package and the Python environment are shared by every checkout on
# the machine (library(adafactor) finds them by name): take them back when
# another checkout installed its own.
setup: .stamps/python
	@[ "$$(cat "$$(Rscript -e 'cat(system.file(package = "adafactor"))')/installed-from" 2>/dev/null)" = "$(CURDIR)" ] \
	  || { rm -f .stamps/r-package; $(MAKE) --no-print-directory .stamps/r-package; }
	@$(PY) -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("adafactor").origin.startswith("$(CURDIR)/python/"))' \
	  || $(PY) -m pip install -q --disable-pip-version-check --no-deps -e .

# R from Debian's packages (CRAN is not reachable here).
.stamps/r-system:
	@mkdir -p .stamps
	if ! Rscript -e 'for (p in c("reticulate", "testthat", "roxygen2")) if (!requireNamespace(p, quietly = TRUE)) quit(status = 1)' >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(R_PACKAGES); \
	fi
	touch $@

# Roxygen docs, the Python sources bundled in inst/python (for
# install_adafactor()), the tarball, and the installed R package.
.stamps/r-package: .stamps/r-system $(R_SOURCES)
	Rscript -e 'roxygen2::roxygenise()' >/dev/null
	rm -rf inst/python && mkdir -p inst/python
	cp pyproject.toml README.md inst/python/
	cp -r python inst/python/python
	find inst/python -name '__pycache__' -prune -exec rm -rf {} +
	R CMD build --no-build-vignettes . >/dev/null
	R CMD INSTALL --no-multiarch $(TARBALL) >/dev/null
	echo "$(CURDIR)" > "$$(Rscript -e 'cat(system.file(package = "adafactor"))')/installed-from"
	touch $@

# The Python environment: created by the R package's install_adafactor() (so
# every fresh machine exercises it), then the checkout installed editable with
# the JAX, PyTorch and test extras.
.stamps/python: .stamps/r-package pyproject.toml
	if [ ! -x $(PY) ]; then Rscript -e 'adafactor::install_adafactor("$(VENV)")'; fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[jax,torch,test]'
	touch $@

document: .stamps/r-system
	Rscript -e 'roxygen2::roxygenise()'

test-python: setup
	KERAS_BACKEND=tensorflow $(PYTEST) tests/python --ignore=tests/python/test_parity.py
	KERAS_BACKEND=jax $(PYTEST) -m backend tests/python --ignore=tests/python/test_parity.py
	KERAS_BACKEND=torch $(PYTEST) -m backend tests/python --ignore=tests/python/test_parity.py

test-r: setup
	Rscript -e 'testthat::test_dir("tests/testthat", package = "adafactor", load_package = "installed", stop_on_failure = TRUE)'

# rpy2 and reticulate in one Python process.
test-parity: setup
	KERAS_BACKEND=tensorflow $(PYTEST) tests/python/test_parity.py

check: setup
	_R_CHECK_SYSTEM_CLOCK_=0 R CMD check --no-manual $(TARBALL)

bench: setup
	KERAS_BACKEND=tensorflow $(PY) bench/bench.py
	KERAS_BACKEND=jax $(PY) bench/bench.py

clean:
	rm -rf .stamps inst/python adafactor.Rcheck $(TARBALL)
