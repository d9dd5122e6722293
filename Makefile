# Conveniences over tools/dev.py (which needs only python3).
.PHONY: run test bench fmt
run:
	python3 tools/dev.py run
test:
	python3 tools/dev.py test
bench:
	python3 tools/dev.py bench
fmt:
	.venv/bin/ruff format evstate tests bench tools examples && .venv/bin/ruff check --fix evstate tests bench tools examples
