#!/usr/bin/env bash
# Sourced by run-tests.sh: a second virtualenv (.venv-nova) with Nova 34 and
# the parts of its functional harness, under constraints, and nova_stealth
# installed as a wheel (Nova loads the driver from the installed
# nova/virt/stealth package), for the tests in tests/functional_nova.
set -euo pipefail

# Without the extras: nova-compute's environment has only what the driver
# needs, and tests/functional_nova checks that it is enough.
"${PYTHON:-python3}" -m venv .venv-nova
.venv-nova/bin/pip install -q --disable-pip-version-check \
    -c tools/nova-constraints.txt \
    -r requirements.txt -r test-requirements.txt \
    -r tools/nova-test-requirements.txt
.venv-nova/bin/pip install -q --disable-pip-version-check --no-deps \
    --force-reinstall .
