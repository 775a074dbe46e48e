# `make test` is the test command of the README and of .ci/run.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test
test:
	@command -v chromium >/dev/null || { \
		echo "installing Chromium (Debian package) for the UI test"; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	pytest
