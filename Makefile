# Two commands matter: `make demo` (run the whole pipeline locally) and `make test`.
# Both install what they need (uv included) into .venv; nothing else is needed from the machine.

SHELL := /bin/bash
UV := $(shell scripts/ensure-uv.sh)
RUN := $(UV) run --frozen --all-extras
SHARED_DATA ?= $(abspath ../shared/data)
# moto accepts any credentials; these dummies only keep the AWS SDKs from looking further.
LOCAL_AWS := AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local-not-a-secret AWS_DEFAULT_REGION=us-east-1

.PHONY: help install demo local-cloud test lint typecheck pytest bench clean

help:
	@echo "make demo   - local cloud + function runtime + watcher; drop videos into ./var/inbox"
	@echo "make test   - lint, type-check and the test suite"
	@echo "make bench  - every benchmark side by side with its baseline"

install:
	$(UV) sync --frozen --all-extras

var/known_faces.json: | install
	@mkdir -p var
	@if [ -f "$(SHARED_DATA)/cse546/encoding" ]; then \
	  $(RUN) hybrid-lambda faces import-pickle "$(SHARED_DATA)/cse546/encoding" -o $@; \
	else echo "no known faces: build some with 'hybrid-lambda faces build PHOTO_DIR -o $@'"; fi

local-cloud: install var/known_faces.json
	$(LOCAL_AWS) HYBRID_STAGING_ROOT=./var $(RUN) hybrid-watcher local-cloud --state-dir ./var \
	  --known-faces var/known_faces.json \
	  $$([ -f "$(SHARED_DATA)/cse546/student_data.json" ] && echo --students "$(SHARED_DATA)/cse546/student_data.json")

demo: local-cloud

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: install
	$(RUN) mypy

# pytest exits 5 when it collected nothing (e.g. a filtered run): that is not a failure here.
pytest: install
	$(RUN) pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest: no tests collected" || exit $$rc; }

test: lint typecheck pytest

bench: install
	$(RUN) python bench/recognition.py

clean:
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache
