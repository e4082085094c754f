#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine, as root: install the
# Debian packages and a virtualenv (.venv) the tests need, then flake8 and
# every test (unit and functional) with pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "run-tests.sh: run as root; the functional tests make network" \
         "namespaces and traffic-control trees" >&2
    exit 1
fi

# iproute2: ip netns, veth, tc; ethtool: offloads off so captures hold
# wire-sized packets; iperf3: throughput of unshaped traffic;
# tcpdump: the adversary's captures;
# git: pbr reads the version from the history.
DEBIAN_PACKAGES="iproute2 ethtool iperf3 tcpdump git"
missing=""
for pkg in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
        grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check \
    -r requirements.txt -r test-requirements.txt
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .

.venv/bin/flake8
.venv/bin/pytest -p no:cacheprovider -ra tests "$@"
