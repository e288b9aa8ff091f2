#!/bin/bash
# Start Open vSwitch without systemd: ovsdb-server (unix socket and
# ptcp:6640 on loopback) and ovs-vswitchd. Idempotent: running daemons are
# left alone. The kernel module is not needed; bridges use the userspace
# (netdev) datapath.
#
# The agent uses the unix socket. ptcp:6640 is for the functional tests'
# relays and the benchmarks; it lets any local user rewrite the switch,
# so OVSDB_TCP= (empty) starts ovsdb-server without it.
set -eu

RUNDIR=${OVS_RUNDIR:-/var/run/openvswitch}
DBDIR=${OVS_DBDIR:-/etc/openvswitch}
LOGDIR=${OVS_LOGDIR:-/var/log/openvswitch}
DB=$DBDIR/conf.db
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
OVSDB_TCP=${OVSDB_TCP-ptcp:6640:127.0.0.1}

mkdir -p "$RUNDIR" "$DBDIR" "$LOGDIR"

running() {
    local pidfile=$RUNDIR/$1.pid
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

if ! running ovsdb-server; then
    if [ ! -s "$DB" ]; then
        ovsdb-tool create "$DB" "$SCHEMA"
    elif [ "$(ovsdb-tool needs-conversion "$DB" "$SCHEMA")" = yes ]; then
        ovsdb-tool convert "$DB" "$SCHEMA"
    fi
    tcp_remote=()
    if [ -n "$OVSDB_TCP" ]; then
        tcp_remote=(--remote="$OVSDB_TCP")
    fi
    ovsdb-server "$DB" \
        --remote="punix:$RUNDIR/db.sock" \
        "${tcp_remote[@]}" \
        --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
        --pidfile="$RUNDIR/ovsdb-server.pid" \
        --unixctl="$RUNDIR/ovsdb-server.ctl" \
        --log-file="$LOGDIR/ovsdb-server.log" \
        --detach
    ovs-vsctl --no-wait init
fi

if ! running ovs-vswitchd; then
    ovs-vswitchd "unix:$RUNDIR/db.sock" \
        --pidfile="$RUNDIR/ovs-vswitchd.pid" \
        --unixctl="$RUNDIR/ovs-vswitchd.ctl" \
        --log-file="$LOGDIR/ovs-vswitchd.log" \
        --detach
fi

# Wait until vswitchd has taken the database's configuration.
for _ in $(seq 1 50); do
    if ovs-vsctl --timeout=2 show >/dev/null 2>&1 && \
            ovs-appctl -t "$RUNDIR/ovs-vswitchd.ctl" version \
            >/dev/null 2>&1; then
        echo "Open vSwitch is running"
        exit 0
    fi
    sleep 0.2
done
echo "Open vSwitch did not start" >&2
exit 1
