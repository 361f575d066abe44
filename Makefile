# Everything runs from a local virtualenv that the first target creates.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint servers venv bench clean

# Tests that also run on PostgreSQL (a throwaway cluster the suite starts itself).
POSTGRES_TESTS := tests/delivery tests/transports tests/retention tests/test_control_pipeline.py tests/test_region_receiver.py tests/test_control_responses.py tests/test_rerouting.py tests/test_payload_admin.py tests/test_slack_replies.py

$(STAMP): setup.cfg pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m example_project.demo

servers:
	bash tools/install-servers.sh

test: $(STAMP) servers
	SILO_TEST_DB=postgres $(PY) -m pytest $(POSTGRES_TESTS)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-lint.txt
	$(PY) -m ruff check silo_router tests example_project
	$(PY) -m ruff format --check silo_router tests example_project
	$(PY) -m mypy silo_router

# The whole benchmark suite; a script that fails is reported and the rest still run.
# Writes bench/results/<date>.json, summary.md and summary.png (bench/summary.py), and the
# table into docs/benchmarks.md. QUICK=1 runs every script with --quick (a check that the
# suite runs, about 15 minutes; not the bar's figures). BENCH_ARGS go to every script;
# BENCH_ARGS_<script> (BENCH_ARGS_control_ack="--storage sqlite-filesystem", say) to one.
BENCH_SCRIPTS := control_ack control_stages delivery_faults tracing_overhead backlog_drain table_growth flow_latency
QUICK ?=
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet -r bench/requirements.txt
	bash tools/install-bench-tools.sh
	@since=$$(date +%s); skipped=""; failed=""; \
	run() { name=$$1; shift; \
	  if [ ! -f bench/$$name.py ]; then echo "== bench/$$name.py does not exist yet: skipped"; skipped="$$skipped,$$name"; return; fi; \
	  echo "== bench/$$name.py $$*"; $(PY) bench/$$name.py "$$@" || failed="$$failed $$name"; }; \
	$(foreach name,$(BENCH_SCRIPTS),run $(name) $(if $(QUICK),--quick) $(BENCH_ARGS) $(BENCH_ARGS_$(name));) \
	$(PY) bench/summary.py --since $$since --skipped "$$skipped" $(if $(QUICK),--quick) --docs docs/benchmarks.md; \
	echo "bench: $$(( $$(date +%s) - since )) s"; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) var build dist *.egg-info .pytest_cache
