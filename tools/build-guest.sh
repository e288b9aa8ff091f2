#!/bin/bash
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
#
# Build a tiny guest for traffic tests: the Debian cloud kernel and a
# busybox initramfs, written as vmlinuz and initrd.img (world-readable, as
# qemu may run as an unprivileged user) into DIR:
#
#   tools/build-guest.sh [DIR]
#
# DIR defaults to $VIFAGENT_GUEST_DIR, then /var/cache/vifagent/guest. The
# output path is printed last. Boot it with "console=ttyS0
# vifagent.ip=10.0.0.1/24 vifagent.peer=10.0.0.2 [vifagent.mtu=1450]": the
# guest configures eth0, prints VIFAGENT-GUEST-READY, then pings the peer
# once a second for ever, printing VIFAGENT-PING-OK <peer> or
# VIFAGENT-PING-FAIL <peer> per attempt on the console. Without
# vifagent.ip, eth0 is only brought up; without a NIC, READY comes at
# once. The kernel acknowledges PCI hot-unplug, which a domain without an
# OS never does.
#
# Idempotent and cached: a run finding both files built by this version of
# the script does nothing. The kernel is kept in DIR/kernel, so a changed
# script only rebuilds the initramfs; remove DIR to take a newer kernel.
# Building (not reusing) needs root: missing packages are installed with
# apt and the kernel package is fetched with apt-get download.
set -eu

DIR=${1:-${VIFAGENT_GUEST_DIR:-/var/cache/vifagent/guest}}
KERNEL_METAPACKAGE=linux-image-cloud-amd64
# The modules the guest needs for its one NIC. Their dependencies are
# found in the kernel package; anything built into the kernel is skipped.
ROOT_MODULES="virtio_pci virtio_net"
PACKAGES="busybox-static cpio kmod qemu-system-x86"
BUSYBOX=/bin/busybox

umask 022
STAMP=$(sha256sum "$0" | cut -d' ' -f1)

fresh() {
    [ -r "$DIR/vmlinuz" ] && [ -r "$DIR/initrd.img" ] &&
        [ "$(cat "$DIR/.stamp" 2>/dev/null || true)" = "$STAMP" ]
}

if fresh; then
    echo "$DIR"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "build-guest.sh: $DIR needs building, which must run as root" >&2
    exit 1
fi

mkdir -p "$DIR"
chmod 0755 "$DIR"
# Concurrent test workers may all ask for the guest: one builds, the
# others wait and then find it fresh.
exec 9>"$DIR/.lock"
flock 9
if fresh; then
    echo "$DIR"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK"

# Only what is missing is installed. stdout is for the output path only.
"$(dirname "$0")/install-deps.sh" $PACKAGES >&2

# The versioned kernel package the metapackage currently depends on, e.g.
# linux-image-6.1.0-56-cloud-amd64.
kernel_package() {
    apt-cache depends "$KERNEL_METAPACKAGE" 2>/dev/null |
        sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' |
        head -n 1
}

download_kernel() {
    local pkg
    pkg=$(kernel_package)
    [ -n "$pkg" ] || return 1
    (cd "$WORK/deb" && apt-get download -q "$pkg" >&2) || return 1
    echo "$pkg" > "$WORK/deb/package"
}

# Kernel cache: vmlinuz plus the modules the guest loads, in load order.
KCACHE=$DIR/kernel
if [ ! -s "$KCACHE/package" ]; then
    mkdir -p "$WORK/deb"
    # apt drops privileges to _apt for downloads when it can write here.
    chown _apt "$WORK/deb" 2>/dev/null || true
    if ! download_kernel; then
        apt-get update -q >&2
        download_kernel
    fi
    echo "Kernel package: $(cat "$WORK/deb/package")" >&2
    dpkg-deb -x "$WORK/deb"/*.deb "$WORK/tree"
    # /lib/modules up to Debian 12, /usr/lib/modules after.
    moddir=$(find "$WORK/tree" -mindepth 3 -maxdepth 4 -type d \
        -path '*/lib/modules/*' | head -n 1)
    kver=${moddir##*/}
    mkdir -p "$WORK/kernel/modules"
    cp "$WORK/tree/boot/vmlinuz-$kver" "$WORK/kernel/vmlinuz"

    # Depth-first over modinfo's depends, so every module comes after
    # what it needs. Module names treat "-" and "_" alike.
    seen=" "
    order=""
    add_module() {
        local name=$1 pattern ko deps dep
        case $seen in
            *" $name "*) return 0 ;;
        esac
        seen="$seen$name "
        pattern=${name//[-_]/[-_]}
        ko=$(find "$moddir" -name "$pattern.ko*" | head -n 1)
        if [ -z "$ko" ]; then
            if grep -q "/$pattern\.ko" "$moddir/modules.builtin"; then
                echo "Built in: $name" >&2
                return 0
            fi
            echo "build-guest.sh: module $name not in $kver" >&2
            exit 1
        fi
        deps=$(modinfo -F depends "$ko")
        for dep in ${deps//,/ }; do
            add_module "$dep"
        done
        case $ko in
            *.ko) cp "$ko" "$WORK/kernel/modules/$name.ko" ;;
            *.ko.xz) $BUSYBOX xz -dc "$ko" > "$WORK/kernel/modules/$name.ko" ;;
            *.ko.gz) gzip -dc "$ko" > "$WORK/kernel/modules/$name.ko" ;;
            *)
                echo "build-guest.sh: cannot unpack $ko" >&2
                exit 1
                ;;
        esac
        order="$order$name "
    }
    for mod in $ROOT_MODULES; do
        add_module "$mod"
    done
    echo "Modules: $order" >&2
    echo "$order" > "$WORK/kernel/modules/order"
    cp "$WORK/deb/package" "$WORK/kernel/package"
    echo "$kver" > "$WORK/kernel/version"
    rm -rf "$KCACHE"
    mv "$WORK/kernel" "$KCACHE"
fi

# The initramfs: busybox, the modules and /init.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/dev" "$ROOTFS/proc" "$ROOTFS/sys" \
    "$ROOTFS/tmp" "$ROOTFS/lib/modules"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $($BUSYBOX --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ROOTFS/bin/$applet"
done
ln -s bin "$ROOTFS/sbin"
cp "$KCACHE"/modules/* "$ROOTFS/lib/modules/"

cat > "$ROOTFS/init" <<'EOF'
#!/bin/sh
# vifagent test guest: configure eth0 from the kernel command line, then
# ping the peer for ever. init must never exit.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

for mod in $(cat /lib/modules/order); do
    insmod "/lib/modules/$mod.ko" || echo "VIFAGENT-INSMOD-FAIL $mod"
done

ip= peer= mtu=
for arg in $(cat /proc/cmdline); do
    case $arg in
        vifagent.ip=*) ip=${arg#*=} ;;
        vifagent.peer=*) peer=${arg#*=} ;;
        vifagent.mtu=*) mtu=${arg#*=} ;;
    esac
done

ip link set lo up
# eth0 is the first virtio NIC (vendor 0x1af4, device 0x1000 or 0x1041);
# wait for its driver only when there is one.
nic=
for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    case $(cat "$dev/device") in
        0x1000|0x1041) nic=yes ;;
    esac
done
tries=0
while [ -n "$nic" ] && [ ! -e /sys/class/net/eth0 ] && [ $tries -lt 300 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if [ -n "$nic" ] && [ ! -e /sys/class/net/eth0 ]; then
    echo "VIFAGENT-GUEST-NO-ETH0"
elif [ -z "$nic" ]; then
    echo "VIFAGENT-GUEST-READY (no NIC)"
elif [ -z "$ip" ]; then
    [ -z "$mtu" ] || ip link set eth0 mtu "$mtu"
    ip link set eth0 up
    echo "VIFAGENT-GUEST-READY (eth0 up, no vifagent.ip)"
else
    [ -z "$mtu" ] || ip link set eth0 mtu "$mtu"
    ip addr add "$ip" dev eth0
    ip link set eth0 up
    echo "VIFAGENT-GUEST-READY $ip"
    while [ -n "$peer" ]; do
        if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then
            echo "VIFAGENT-PING-OK $peer"
            sleep 1
        else
            echo "VIFAGENT-PING-FAIL $peer"
        fi
    done
fi
while :; do
    sleep 3600
done
EOF
chmod 0755 "$ROOTFS/init"

(cd "$ROOTFS" && find . | cpio -o -H newc -R 0:0 --quiet) |
    gzip -9 > "$WORK/initrd.img"
install -m 0644 "$KCACHE/vmlinuz" "$DIR/.vmlinuz.new"
install -m 0644 "$WORK/initrd.img" "$DIR/.initrd.img.new"
mv -f "$DIR/.vmlinuz.new" "$DIR/vmlinuz"
mv -f "$DIR/.initrd.img.new" "$DIR/initrd.img"
echo "$STAMP" > "$DIR/.stamp"
echo "$DIR"
