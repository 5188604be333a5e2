# lvsagent — see README.md.  Everything runs as root on Debian 12.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
SITE  = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: all deps distro-deps venv test test-unit test-netns test-kernel test-distro test-deps \
	test-deb-clean uml-kernel lint bench demo clean deb

all: test

deps:
	@tools/host-deps.sh

distro-deps:
	@tools/distro-deps.sh

# A venv on Debian's own python3, so that Debian's python3-nftables (libnftables'
# bindings, not on PyPI in a current form) can be linked in.
$(VENV)/.stamp: pyproject.toml requirements-dev.txt tools/host-deps.sh
	@tools/host-deps.sh
	/usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q -e .
	ln -sfn /usr/lib/python3/dist-packages/nftables "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nftables"
	touch $@

venv: $(VENV)/.stamp

lint: venv
	$(VENV)/bin/ruff check lvsagent tests
	$(VENV)/bin/mypy

test-unit: venv
	$(PYTEST) tests/unit

# pyproject.toml's dependency ranges, both ends: the unit tests in .venv-low, every runtime
# dependency at its range's floor, and in .venv-high, each at the newest its range allows
# (re-resolved when pyproject.toml changes).  Like .venv, on Debian's python3.  Part of
# `make test`: ~90 s with both venvs made, ~45 s more to make each (pip's cache warm).
FLOORS = /usr/bin/python3 -c 'import re, tomllib; \
	deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	print(" ".join(re.sub(r">=([^,]+).*", r"==\1", d) for d in deps))'

.venv-low/.stamp .venv-high/.stamp: .venv-%/.stamp: pyproject.toml requirements-dev.txt
	@tools/host-deps.sh
	rm -rf .venv-$*
	/usr/bin/python3 -m venv .venv-$*
	.venv-$*/bin/pip install -q --upgrade pip
	.venv-$*/bin/pip install -q -r requirements-dev.txt
	if [ $* = low ]; then .venv-$*/bin/pip install -q $$($(FLOORS)) -e .; \
	else .venv-$*/bin/pip install -q --upgrade --upgrade-strategy eager -e .; fi
	ln -sfn /usr/lib/python3/dist-packages/nftables \
		"$$(.venv-$*/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nftables"
	.venv-$*/bin/pip list 2>/dev/null | grep -iE '^(pyroute2|prometheus.client|systemd.python) '
	touch $@

test-deps: .venv-low/.stamp .venv-high/.stamp
	.venv-low/bin/python -m pytest -q -p no:cacheprovider tests/unit
	.venv-high/bin/python -m pytest -q -p no:cacheprovider tests/unit

test-netns: venv
	$(PYTEST) tests/netns

KERNEL_TIMEOUT ?= 1800

# The Debian package (debian/), built with dpkg-buildpackage in a copy of the sources under
# build/deb, so that nothing lands beside this tree.  A no-op while no source is newer than
# the .deb.  Debian's PATH: neither a pyenv shim nor the venv may stand in for /usr/bin/python3.
DEB_VERSION := $(shell dpkg-parsechangelog -S Version)
DEB := build/deb/lvsagent_$(DEB_VERSION)_all.deb
DEB_SOURCES := $(shell find lvsagent debian systemd doc etc -name __pycache__ -prune -o \
	\( -type f -o -type l \) -print) README.md
DEB_PATH := /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

deb: $(DEB)

$(DEB): $(DEB_SOURCES)
	@dpkg-checkbuilddeps debian/control 2>/dev/null || \
		tools/apt-ensure deb debhelper dh-python python3-venv || test $$? = 10
	@rm -rf build/deb && mkdir -p build/deb/src
	@cp -a --parents $(DEB_SOURCES) build/deb/src/
	@echo "deb: dpkg-buildpackage in build/deb/src (log: build/deb/build.log)"
	@cd build/deb/src && env PATH=$(DEB_PATH) dpkg-buildpackage -b --no-sign \
		>../build.log 2>&1 || { tail -40 ../build.log; exit 1; }
	@rm -rf build/deb/src
	@echo "deb: $@"

# The user-mode Linux kernel of the kernel lab (IPVS + nf_tables), built once per
# machine into $${LVSAGENT_CACHE:-/var/cache/lvsagent} (~15 CPU-minutes); a no-op when cached.
uml-kernel:
	@bash tests/kernel/build-uml.sh >/dev/null

# Host: the runner's own tests, and systemd as PID 1 in a lab of its own (test_systemd boots
# it; test_package installs the .deb there).
# Guest: every other tests/kernel/test_*.py (IPVS, nft, the agents, the two-box topology).
# The package on a clean Debian 12 (a debootstrap'd chroot, made once into the cache): apt
# install, then purge.  Needs Debian's package registry; not part of `make test`.
test-deb-clean: venv deb
	$(PYTEST) tests/package

# The guest's files in two guests at once, one per core (tests/kernel/guests.py): the first
# takes LAB_GUEST1, the second every other file, so a new one runs without being listed.
LAB_HOST_ONLY := tests/kernel/test_uml_runner.py tests/kernel/test_systemd.py tests/kernel/test_package.py
LAB_GUEST1 := tests/kernel/test_twobox_lvsagent.py tests/kernel/test_twobox_converted.py \
	tests/kernel/test_twobox_deadbox.py

test-kernel: venv uml-kernel deb
	$(PYTEST) tests/kernel/test_uml_runner.py tests/kernel/test_systemd.py::test_lvsagent_under_systemd_pid1 \
		tests/kernel/test_package.py::test_the_package_under_systemd_pid1
	$(PY) -m tests.kernel.guests --timeout $(KERNEL_TIMEOUT) -- \
		$(abspath $(PY)) -m pytest -p no:cacheprovider --durations=15 -- \
		$(LAB_GUEST1) -- tests/kernel $(addprefix --ignore=,$(LAB_GUEST1) $(LAB_HOST_ONLY))

DISTRO_TIMEOUT ?= 900
# In Debian's packaged kernel (tests/distro): the module cases first (they need a kernel that
# has loaded none of lvsagent's modules), then the IPVS reconciler, each loop-guard mode's
# table read back, and a two-box kill -9 with traffic (the lab's scenario). The guest runs
# under TCG where KVM cannot run it, ~40x slower than the host: each case here was chosen
# for that budget.
DISTRO_TESTS := tests/distro/test_modules.py \
	tests/kernel/test_ipvs_batch.py::test_apply_many_converges_a_drifted_table \
	tests/kernel/test_agent_traffic.py::test_resync_repairs_a_flush_and_restart_adopts_the_table \
	tests/kernel/test_agent_ipvs.py::test_reload_applies_only_the_difference_and_refuses_a_bad_file \
	tests/netns/test_netfilter.py::test_the_kernel_reads_back_every_modes_table_as_written \
	tests/distro/test_twobox.py

# Host: the runner's own tests. Guest: DISTRO_TESTS. The guest's root is this machine's,
# read-only: bytecode and pytest's rewritten test modules are written here first.
test-distro: venv distro-deps
	$(PYTEST) tests/distro/test_runner.py
	$(PY) -m compileall -q lvsagent tests
	$(PYTEST) -q --collect-only $(DISTRO_TESTS) >/dev/null
	PYTHONDONTWRITEBYTECODE=1 $(PY) -m tests.distro.qemu --timeout $(DISTRO_TIMEOUT) -- \
		$(abspath $(PY)) -m pytest -p no:cacheprovider -p tests.distro.waits --durations=0 \
		$(DISTRO_TESTS)

test: lint test-unit test-deps test-netns test-kernel test-distro

bench: venv uml-kernel
	$(PY) -m tests.bench.run

# Each step says what it does and how long it took: a first run installs packages, builds the
# lab kernel (~10 min on 2 cores, progress every 30 s) and boots it; later runs find both cached.
demo:
	@tools/timed "Debian packages (tools/host-deps.sh)" tools/host-deps.sh
	@tools/timed "Python venv ($(VENV))" $(MAKE) -s --no-print-directory venv
	@tools/timed "lab kernel (cached in $${LVSAGENT_CACHE:-/var/cache/lvsagent})" \
		$(MAKE) -s --no-print-directory uml-kernel
	@$(PY) -m tests.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
