# Two commands matter: `make demo` (run the whole pipeline locally) and `make test`.
# Both install what they need (uv included) into .venv; nothing else is needed from the machine.

SHELL := /bin/bash
UV := $(shell scripts/ensure-uv.sh)
RUN := $(UV) run --frozen --all-extras
SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: help install demo demo-samples local-cloud test lint typecheck pytest bench clean install-service publish image-test audit soak

help:
	@echo "make demo   - local cloud + function runtime + watcher; drop videos into ./var/inbox"
	@echo "make demo-samples - the same, drops the sample videos and checks the answers"
	@echo "make test   - lint, type-check and the test suite"
	@echo "make bench  - every benchmark side by side with its baseline"
	@echo "make audit  - known vulnerabilities in the locked dependencies (pip-audit)"
	@echo "make soak   - the load test: 10,000 files through a real daemon (minutes)"

install:
	$(UV) sync --frozen --all-extras

# The course's material when it is beside the clone (../shared/data/cse546), otherwise (or with
# USE_SAMPLES=1) the small sample shipped in samples/ (samples/README.md: source and licence).
COURSE := $(SHARED_DATA)/cse546
ifeq ($(if $(USE_SAMPLES),,$(wildcard $(COURSE)/encoding)),)
KNOWN_FACES := samples/known_faces.json
STUDENTS := samples/students.json
SAMPLE_VIDEOS := samples/videos
SAMPLE_EXPECT := samples/expected
else
KNOWN_FACES := var/known_faces.json
STUDENTS := $(COURSE)/student_data.json
SAMPLE_VIDEOS := $(COURSE)/test_case_1
SAMPLE_EXPECT := $(COURSE)/mapping
endif
STUDENTS_ARG = --students $(STUDENTS)

# The course's known faces, converted from its pickle (safely: no code runs).
var/known_faces.json: | install
	@mkdir -p var
	$(RUN) hybrid-lambda faces import-pickle "$(COURSE)/encoding" -o $@

# The whole pipeline: local cloud, `hybrid-local serve` and `hybrid-watcher run`,
# supervised; drop videos into ./var/inbox, results land in ./var/done. Ctrl-C stops all.
demo: install $(KNOWN_FACES)
	$(RUN) hybrid-local demo --state-dir ./var --known-faces $(KNOWN_FACES) $(STUDENTS_ARG)

# The same, dropping the sample clips and exiting 0 only if every answer is right.
demo-samples: install $(KNOWN_FACES)
	$(RUN) hybrid-local demo --state-dir ./var --known-faces $(KNOWN_FACES) $(STUDENTS_ARG) \
	  --samples "$(SAMPLE_VIDEOS)" --expect "$(SAMPLE_EXPECT)"

# Only the local cloud (moto's server, provisioned), e.g. to run the other parts by hand.
local-cloud: install $(KNOWN_FACES)
	HYBRID_STAGING_ROOT=./var $(RUN) hybrid-local cloud --state-dir ./var \
	  --known-faces $(KNOWN_FACES) $(STUDENTS_ARG)

lint: install
	$(UV) lock --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) hadolint lambda_fn/Dockerfile watcher/Dockerfile

typecheck: install
	$(RUN) mypy

# pytest exits 5 when it collected nothing (e.g. a filtered run): that is not a failure here.
# Branch coverage is printed (files under 100 %) and held to pyproject's fail_under, except in
# a run filtered with PYTEST_ARGS.
pytest: install
	COVERAGE_FILE=$(CURDIR)/.coverage $(RUN) pytest --cov --cov-report=term:skip-covered $(if $(PYTEST_ARGS),--cov-fail-under=0) $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest: no tests collected" || exit $$rc; }

test: lint typecheck pytest

# The daemon as a systemd service on this VM (as root): user, folders, config, unit.
install-service:
	scripts/install-service.sh

# A code change to the deployed function: image from lambda_fn/Dockerfile with the git revision
# baked in (VERSION), pushed to ECR under that tag, then the SAM stack deployed with it as its
# ImageUri (a change set). IMAGE_TAG=<earlier revision> rolls back (deploy/README.md).
publish:
	scripts/publish.sh

# Each benchmark prints ours beside its baseline: recognition vs the classic implementation,
# upload vs rclone, s5cmd and boto3, the daemon's intake (no baseline: its targets), the
# end-to-end workload (local pipeline vs the classic approach, sequential), and drop → result
# latency with the result queue vs LIST polling only (singles, then a burst of 100); the
# face descriptor alone, numpy vs dlib-bin; and 100 then 1,000 videos through the whole local
# stack vs the classic handler on the same cores (bench/scale.py). ~25 min here.
# Every benchmark runs even when one misses its goal (it prints FAIL); the exit status says
# whether any did.
BENCHES := "recognition.py --workers 1" "descriptor.py" "upload.py --repeat 3" \
  "intake.py --files 1000,10000" "workload.py" "accuracy.py" \
  "latency.py --rounds 2 --burst 100" "scale.py --sizes 100,1000"
bench: install
	@status=0; for bench in $(BENCHES); do \
	  echo "== bench/$$bench"; $(RUN) python bench/$$bench || status=1; \
	done; exit $$status

# Known vulnerabilities in the locked versions (uv.lock, every extra and the dev group):
# pip-audit --strict against OSV or PyPI's per-release API, whichever answers; where neither does
# (this project's CI machines reach only PyPI's index), PyPI's per-project advisory data, which
# covers each package locked at its latest release and names the rest (scripts/audit_lock.py).
# Ignored advisories, as `--ignore ID`, each with its reason: none.
AUDIT_IGNORE :=
audit: install
	@req=$$(mktemp) && trap 'rm -f "$$req"' EXIT && \
	$(UV) export --frozen --all-extras --no-hashes --no-emit-project -o "$$req" >/dev/null && \
	$(RUN) python scripts/audit_lock.py "$$req" $(AUDIT_IGNORE)

# Load: 10,000 files dropped at once into a real daemon (tests/e2e/test_soak.py); minutes long,
# so `make test` leaves it out (pyproject addopts: -m "not soak"; this -m replaces it).
soak: install
	$(RUN) pytest -m soak $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest: no tests collected" || exit $$rc; }

# The function image, built with buildah (no Docker engine) and proven: the course clips run
# through its own entry point against a test-only Runtime API and moto. Needs root; ~3-5 min
# with DLIB_VARIANT=bin (default here), 15+ min the first time with DLIB_VARIANT=blas.
image-test: install
	HYBRID_SHARED_DATA=$(SHARED_DATA) UV=$(UV) scripts/image-test.sh

clean:
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache
