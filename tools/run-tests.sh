#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine, as root: install the
# Debian packages and a virtualenv (.venv) the tests need, then flake8 and
# every test (unit and functional) with pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=tools/setup-host.sh
. tools/setup-host.sh

.venv/bin/flake8
.venv/bin/pytest -p no:cacheprovider -ra tests "$@"
