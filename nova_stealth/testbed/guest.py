# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""The Linux guest: Debian's kernel and busybox, in an initramfs.

Both come from Debian's packages, fetched with ``apt-get download`` and
unpacked with ``dpkg-deb`` into the work directory (nothing is installed
on the machine). The initramfs holds busybox and an ``/init`` that says
:data:`READY` on the serial console and then rewrites part of a
tmpfs-backed buffer with random bytes every second, dirtying memory at a
set rate while QEMU migrates it. It boots under TCG.
"""

import glob
import gzip
import os
import stat
import subprocess

READY = 'nova-stealth guest ready'
MIN_MEMORY_MIB = 128
INIT = '''#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "%(ready)s" > /dev/ttyS0
i=0
while true; do
  dd if=/dev/urandom of=/dirty bs=64k count=%(blocks)d \\
     seek=$(( (i * %(blocks)d) %% %(span)d )) conv=notrunc 2>/dev/null
  i=$((i + 1))
  sleep 1
done
'''
#: The buffer the guest dirties, in 64 KiB blocks (32 MiB).
SPAN_BLOCKS = 512


def _download(workdir, package):
    found = glob.glob(os.path.join(workdir, package + '_*.deb'))
    if not found:
        fetch = ['apt-get', 'download', '-q', package]
        if subprocess.run(fetch, cwd=workdir, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode:
            # A fresh machine may have no package lists yet.
            subprocess.run(['apt-get', 'update', '-qq'], check=True)
            subprocess.run(fetch, cwd=workdir, check=True,
                           stdout=subprocess.DEVNULL)
        found = glob.glob(os.path.join(workdir, package + '_*.deb'))
    return found[0]


def _kernel_package():
    shown = subprocess.run(['apt-cache', 'depends', 'linux-image-amd64'],
                           capture_output=True, text=True, check=True).stdout
    for line in shown.splitlines():
        name = line.split(':', 1)[-1].strip()
        if line.strip().startswith('Depends:') and name.startswith(
                'linux-image-'):
            return name
    raise RuntimeError('no kernel package behind linux-image-amd64')


def _cpio_entry(name, mode, data=b''):
    header = '070701' + ''.join('%08X' % value for value in (
        0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    entry = header.encode() + name.encode() + b'\0'
    entry += b'\0' * (-len(entry) % 4) + data
    return entry + b'\0' * (-len(entry) % 4)


def initramfs(busybox, path, dirty_mib_s):
    """Write a gzip'd newc cpio with busybox and the dirtying /init."""
    blocks = max(1, int(round(dirty_mib_s * 16)))
    init = INIT % {'ready': READY, 'blocks': blocks, 'span': SPAN_BLOCKS}
    with open(busybox, 'rb') as binary:
        busybox_bytes = binary.read()
    archive = b''.join([
        _cpio_entry('bin', stat.S_IFDIR | 0o755),
        _cpio_entry('dev', stat.S_IFDIR | 0o755),
        _cpio_entry('proc', stat.S_IFDIR | 0o755),
        _cpio_entry('bin/busybox', stat.S_IFREG | 0o755, busybox_bytes),
        _cpio_entry('init', stat.S_IFREG | 0o755, init.encode()),
        _cpio_entry('TRAILER!!!', 0),
    ])
    with gzip.open(path, 'wb') as out:
        out.write(archive)
    return path


def build(workdir, dirty_mib_s):
    """Fetch and unpack the packages; return (kernel, initramfs) paths."""
    os.makedirs(workdir, exist_ok=True)
    kernel_deb = _download(workdir, _kernel_package())
    busybox_deb = _download(workdir, 'busybox-static')
    unpacked = os.path.join(workdir, 'root')
    if not os.path.isdir(unpacked):
        for deb in (kernel_deb, busybox_deb):
            subprocess.run(['dpkg-deb', '-x', deb, unpacked], check=True)
    kernel = sorted(glob.glob(os.path.join(unpacked, 'boot', 'vmlinuz-*')))[0]
    path = os.path.join(workdir, 'initramfs-%g.cpio.gz' % dirty_mib_s)
    return kernel, initramfs(os.path.join(unpacked, 'bin', 'busybox'), path,
                             dirty_mib_s)
