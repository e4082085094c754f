#!/usr/bin/env bash
# Sourced by run-tests.sh and run-testbed.sh: check for root, install the
# Debian packages nova_stealth's tests and testbed need, and a virtualenv
# (.venv) with nova_stealth and its requirements.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): run as root; the tests and the testbed make" \
         "network namespaces and traffic-control trees" >&2
    exit 1
fi

# iproute2: ip netns, veth, tc; ethtool: offloads off so captures hold
# wire-sized packets; iperf3: throughput of unshaped traffic;
# tcpdump: the adversary's captures; qemu-system-x86: the testbed's VMs;
# git: pbr reads the version from the history; shellcheck: the devstack
# plugin and these scripts are checked.
DEBIAN_PACKAGES="iproute2 ethtool iperf3 tcpdump qemu-system-x86 git shellcheck"
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
