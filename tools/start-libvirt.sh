#!/bin/bash
# Start libvirt without systemd (virtlogd, then libvirtd) and wait until
# qemu:///system answers. Idempotent: a running libvirtd is left alone.
# The packages come from tools/install-deps.sh.
set -eu

answers() {
    virsh -q -c qemu:///system version >/dev/null 2>&1
}

# Without udev /dev/kvm is 0600 root:root, and libvirtd then probes QEMU
# again on every define (tens of seconds). Guests still use TCG
# (<domain type='qemu'>); this only makes the capabilities cache stick.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi

if answers; then
    echo "libvirtd is running"
    exit 0
fi
if ! pgrep -x virtlogd >/dev/null; then
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    libvirtd -d
fi
for _ in $(seq 1 60); do
    if answers; then
        echo "libvirtd is running"
        exit 0
    fi
    sleep 0.5
done
echo "libvirtd did not start" >&2
exit 1
