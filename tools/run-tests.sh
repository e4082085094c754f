#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine, as root: install the
# Debian packages and the virtualenvs the tests need, then flake8, the unit
# and functional tests (.venv), and the tests on Nova's functional harness
# (.venv-nova) once per Nova concurrency mode, each with pytest. Extra
# arguments go to the unit and the functional runs.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=tools/setup-host.sh
. tools/setup-host.sh
# shellcheck source=tools/setup-nova-env.sh
. tools/setup-nova-env.sh

.venv/bin/flake8
# The unit and functional tests in processes of their own, as tox's py3 and
# functional environments run them: the functional tests fork hundreds of
# helpers, and need not do so beside the thread pools (torch, OpenMP) the
# unit tests leave in their process.
.venv/bin/pytest -p no:cacheprovider -ra tests/unit "$@"
.venv/bin/pytest -p no:cacheprovider -ra tests/functional "$@"
for mode in threading eventlet; do
    NOVA_STEALTH_CONCURRENCY=$mode .venv-nova/bin/pytest -p no:cacheprovider \
        -ra -W ignore::DeprecationWarning tests/functional_nova
done
