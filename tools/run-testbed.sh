#!/usr/bin/env bash
# The main job on a fresh Debian machine, as root: install what the testbed
# needs, then live-migrate a real QEMU VM natively and stealthed under
# background traffic, capture it on-path, score it and print the
# side-by-side table (report in testbed-results/). Extra arguments go to
# `nova-stealth-testbed run` (see --help).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=tools/setup-host.sh
. tools/setup-host.sh

exec .venv/bin/nova-stealth-testbed run "$@"
