#!/usr/bin/env bash
# Sourced by run-tests.sh and run-testbed.sh: check for root, install the
# Debian packages of bindep.txt, and a virtualenv (.venv) with nova_stealth,
# its requirements and the extras the tests and the testbed use. $PYTHON
# (default python3 on PATH) makes the virtualenvs; /usr/bin/python3, the
# system's own, works once python3-venv is installed.
set -euo pipefail
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): run as root; the tests and the testbed make" \
         "network namespaces and traffic-control trees" >&2
    exit 1
fi

# The names of bindep.txt's [platform:dpkg] lines (bindep's own form, read
# without bindep, which is not packaged for Debian 12).
DEBIAN_PACKAGES=$(sed -n 's/^\([a-z0-9][a-z0-9.+-]*\) *\[.*platform:dpkg.*\].*/\1/p' \
    bindep.txt)
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

# QEMU >= 8.2 (avail-switchover-bandwidth), as clouds run it today: on a
# release whose own QEMU is older (Debian 12: 7.2), its backports suite is
# added from the mirror the machine's own apt sources name for the release
# (Debian pins backports low: nothing comes from it unasked), and the
# backports' QEMU is unpacked, not installed, under $BACKPORTS_QEMU for
# the tests that need it (tools/unpack-qemu.sh; the testbed's --qemu).
# The system's QEMU stays the testbed's default.
BACKPORTS_QEMU=/opt/qemu-backports
qemu_is_recent() {
    local version
    version=$(qemu-system-x86_64 --version 2>/dev/null |
        sed -n 's/^QEMU emulator version \([0-9]*\.[0-9]*\).*/\1/p')
    [ -n "$version" ] && printf '%s\n8.2\n' "$version" | sort -V -C -r
}
if ! qemu_is_recent; then
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    backports=/etc/apt/sources.list.d/nova-stealth-backports.sources
    if [ -n "$codename" ] && [ ! -f "$backports" ] &&
            found=$("$PYTHON" tools/backports-mirror.py "$codename"); then
        {
            echo "# Added by nova_stealth's tools/setup-host.sh: the"
            echo "# backports suite of the mirror the sources above name."
            echo "Types: deb"
            echo "URIs: ${found%%$'\t'*}"
            echo "Suites: $codename-backports"
            echo "Components: main"
            signed=${found#*$'\t'}
            [ -z "$signed" ] || echo "Signed-By: $signed"
        } > "$backports"
        apt-get update -qq
    fi
    if [ -f "$backports" ] &&
            [ ! -x "$BACKPORTS_QEMU/usr/bin/qemu-system-x86_64" ]; then
        tools/unpack-qemu.sh "$codename-backports" "$BACKPORTS_QEMU"
    fi
fi

"$PYTHON" -m venv .venv
# doc/requirements.txt: tests/unit/test_docs.py builds the documentation.
.venv/bin/pip install -q --disable-pip-version-check \
    -r requirements.txt -r test-requirements.txt -r doc/requirements.txt
# The tests and the testbed run the audit: its extras too.
.venv/bin/pip install -q --disable-pip-version-check -e '.[audit,testbed]'
# The battery's cnn attacker (the "sequence" extra), tested in CI: the CPU
# build this machine's index serves.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
