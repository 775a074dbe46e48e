# `make test` is the test command of the README and of .ci/run.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

# Debian packages the tests use: Chromium (UI test), PostgreSQL and MariaDB servers that the
# tests start on 127.0.0.1, unixODBC with the MariaDB and FreeTDS (SQL Server) ODBC drivers,
# Redis as the broker of the Celery worker tests.
SYSTEM_PACKAGES := chromium postgresql mariadb-server odbc-mariadb unixodbc tdsodbc redis-server

.PHONY: test fast system-packages verify-compose
test: system-packages
	pytest

# The fast lane while working: every test that needs no real model (the stub models stand in),
# on two processes. The full suite (`make test`) stays what CI runs.
fast: system-packages
	pytest -m "not slow" -n 2 -q

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests:" $$missing; \
		$(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; \
	fi

# The Dockerfile and deploy/compose.yaml built and run end to end with two workers, every image
# from Debian's packages (no registry needed); installs and starts Debian's Docker engine.
verify-compose:
	python scripts/verify_compose.py
