#!/bin/bash
# Install the Debian packages vifagent needs to build and test. Run as
# root. Idempotent: only missing packages are installed, and the package
# index is refreshed only when something has to be installed. No daemon is
# started here (tools/start-ovs.sh, tools/start-rabbitmq.sh and
# tools/start-libvirt.sh do that).
set -eu

# tools/install-deps.sh [PACKAGE ...] installs only the packages named.
PACKAGES=${*:-"openvswitch-switch rabbitmq-server ethtool iproute2 iputils-ping
iptables ipset nftables
pkg-config libvirt-dev python3-venv python3-dev gcc
libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
qemu-system-x86 busybox-static cpio kmod e2fsprogs mount"}

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

missing=()
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "All system packages are installed"
    exit 0
fi

echo "Installing: ${missing[*]}"
apt-get update -q
# Keep maintainer scripts from starting services: the test setup starts
# what it needs itself, and there may be no init system at all.
policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    created_policy=yes
fi
cleanup() {
    if [ "$created_policy" = yes ]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT
apt-get install -y -q --no-install-recommends "${missing[@]}"
