# liftkit: `make book` builds the book, `make test` runs every test tier.
# Both create the virtual environment (.venv) when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Goldens and nbval need bit-reproducible numbers: one thread, no progress bars.
DETERMINISTIC := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LIFTKIT_PROGRESS=0 PYDEVD_DISABLE_FILE_VALIDATION=1
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
CHAPTERS ?=

.PHONY: all setup browser book test unit smoke nbval lint bench regold mutants clean verify-results

all: book

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	@touch $(STAMP)

setup: $(STAMP)

# The browser check drives the system's chromium through Playwright. As root this installs
# Debian's chromium when it is missing; otherwise it stops with the one command to run.
browser: $(STAMP)
	$(BIN)/liftkit check-html --setup

# liftkit build: executes the chapters that changed (cached on each chapter and the liftkit
# source; in parallel, one process per chapter), renders strictly (a failing chapter or any
# warning fails), then opens every page in headless chromium (math, images, links, references,
# console errors).
book: $(STAMP) browser
	$(BIN)/liftkit build
	@echo "book: open _build/html/index.html"

test: lint unit nbval

lint: $(STAMP)
	$(BIN)/ruff check liftkit tests benchmarks

# Tiers 1, 2 and 4: unit tests, chapter smoke runs, the strict book-build check (and the browser
# check of a two-chapter book at the smoke profile, tests/test_book_build.py).
unit: $(STAMP) browser
	$(DETERMINISTIC) $(BIN)/pytest -n 2 --dist loadfile tests

smoke: $(STAMP)
	$(DETERMINISTIC) $(BIN)/pytest -n 2 tests/test_chapters.py

# Tier 3: re-execute the golden notebooks and compare the checked cells.
nbval: $(STAMP)
	$(DETERMINISTIC) $(BIN)/pytest -n 2 --dist loadscope $(NBVAL) tests/notebooks

regold: $(STAMP)
	$(DETERMINISTIC) $(BIN)/liftkit regold $(CHAPTERS)

# Recompute every row of every committed sweep table (book/results/*.parquet) from its recorded
# parameters, on a local Dask cluster, and compare within the replicate sd (slow: every fit).
verify-results: $(STAMP)
	@for table in book/results/*.parquet; do echo "== $$table"; \
	  $(DETERMINISTIC) $(BIN)/liftkit sweep --verify $$table || exit 1; done

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Mutation testing of the formula modules (slow; not part of `make test`): mutmut 3 in a scratch
# copy of the repository, configured by tests/mutmut.cfg; the score and the surviving mutants
# judged harmless are in tests/MUTANTS.md. Needs the `mutants` extra (pip install -e ".[mutants]").
# MUTATE restricts the run to some mutants, e.g. make mutants MUTATE='liftkit.lift.splits*'.
MUTDIR := _build/mutants
MUTATE ?=
mutants: $(STAMP)
	@$(BIN)/python -c "import mutmut" 2>/dev/null || { echo 'mutmut missing: $(BIN)/pip install -e ".[mutants]"'; exit 1; }
	rm -rf $(MUTDIR) && mkdir -p $(MUTDIR)
	tar --exclude=./.venv --exclude=./.git --exclude=./_build --exclude=./runs -cf - . | tar -xf - -C $(MUTDIR)
	cp tests/mutmut.cfg $(MUTDIR)/setup.cfg
	cd $(MUTDIR) && $(DETERMINISTIC) $(CURDIR)/$(BIN)/mutmut run --max-children 2 $(MUTATE); $(CURDIR)/$(BIN)/mutmut results

clean:
	rm -rf _build runs .pytest_cache
