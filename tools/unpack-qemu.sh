#!/usr/bin/env bash
# Unpack a QEMU release from an apt suite under a directory, without
# installing it: unpack-qemu.sh SUITE DEST, e.g.
#   tools/unpack-qemu.sh bookworm /opt/qemu-7.2
#   tools/unpack-qemu.sh bookworm-backports /opt/qemu-backports
# then run the testbed with --qemu DEST/usr/bin/qemu-system-x86_64 (its
# firmware directory is found beside it). The libraries it links come from
# the machine: the suite must be built for this release of Debian.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $(basename "$0") SUITE DEST" >&2
    exit 2
fi
suite=$1
dest=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
(cd "$work" && apt-get download -q \
    "qemu-system-x86/$suite" "qemu-system-common/$suite" \
    "qemu-system-data/$suite")
mkdir -p "$dest"
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$dest"
done
"$dest/usr/bin/qemu-system-x86_64" --version | head -n 1
