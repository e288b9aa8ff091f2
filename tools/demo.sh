#!/bin/bash
# vifagent quick start: one command, as root, on a Debian 12 machine.
#
#   tools/demo.sh          install what is missing, start Open vSwitch,
#                          RabbitMQ and the agent, bind two ports to two
#                          namespace "VMs", show their chains and status,
#                          and ping between them
#   tools/demo.sh stop     unbind the demo ports, stop the agent, remove
#                          the namespaces (Open vSwitch and RabbitMQ stay)
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
DEMO=${VIFAGENT_DEMO_DIR:-/var/lib/vifagent-demo}
VENV=${VIFAGENT_VENV:-$TOP/.venv}
CONF=$DEMO/vifagent.conf
PIDFILE=$DEMO/agent.pid
NET=de000000-0000-4000-8000-000000000001
PORTS=(d1e40001-0000-4000-8000-0000000000a1
    d2e40002-0000-4000-8000-0000000000a2)
MACS=(fa:16:3e:de:00:01 fa:16:3e:de:00:02)
ADDRS=(10.0.0.1/24 10.0.0.2/24)
VMS=(vifagent-demo-vm1 vifagent-demo-vm2)
# The demo's security group: ICMP and TCP 22 in, anything out.
GROUP=de5ec000-0000-4000-8000-0000000000c1

ctl() { "$VENV/bin/vifagent-ctl" --config-file "$CONF" "$@"; }
say() { printf '\n== %s\n' "$*"; }

agent_running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

stop_demo() {
    if agent_running; then
        # Every port the demo agent holds, including ones bound by hand.
        for port in $(ctl list 2>/dev/null | awk 'NR > 1 {print $1}'); do
            ctl unbind "$port" >/dev/null 2>&1 || true
        done
        kill "$(cat "$PIDFILE")"
        for _ in $(seq 1 50); do
            agent_running || break
            sleep 0.2
        done
        echo "agent stopped"
    fi
    rm -f "$PIDFILE"
    for vm in "${VMS[@]}"; do
        ip netns pids "$vm" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$vm" 2>/dev/null || true
    done
    echo "demo namespaces removed; Open vSwitch and RabbitMQ left running"
}

if [ "${1:-}" = stop ]; then
    stop_demo
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root" >&2
    exit 1
fi

say "system packages, Open vSwitch, RabbitMQ"
"$TOP/tools/install-deps.sh"
"$TOP/tools/start-ovs.sh"
"$TOP/tools/start-rabbitmq.sh"

say "vifagent in $VENV"
if [ ! -x "$VENV/bin/vifagent-agent" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    (cd "$TOP" && "$VENV/bin/pip" install -q -e .)
fi
echo "installed"

say "agent (config $CONF, log $DEMO/agent.log)"
mkdir -p "$DEMO"
cat > "$CONF" <<CONF
[DEFAULT]
host = $(hostname)
transport_url = rabbit://guest:guest@127.0.0.1:5672/
log_file = $DEMO/agent.log

[agent]
state_path = $DEMO/state
# The demo's "VMs" are network namespaces (vifagent-demo-vm1, -vm2).
netns_ports = true
netns_allowed = vifagent-demo-*

[ovs]
integration_bridge = br-int
# No OVS kernel module is needed: the userspace datapath.
datapath_type = netdev
CONF
if ! agent_running; then
    nohup "$VENV/bin/vifagent-agent" --config-file "$CONF" \
        >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
fi
for _ in $(seq 1 60); do
    if ctl --timeout 2 status >/dev/null 2>&1; then break; fi
    agent_running || { echo "agent failed; see $DEMO/agent.log" >&2; exit 1; }
done
ctl status

say "a security group: ICMP and TCP 22 in, anything out"
cat > "$DEMO/groups.json" <<JSON
[{"id": "$GROUP", "rules": [
    {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"},
    {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
     "port_range_min": 22, "port_range_max": 22},
    {"direction": "egress", "ethertype": "IPv4"}]}]
JSON
ctl sync-groups "$DEMO/groups.json" >/dev/null
ctl groups
ctl group "$GROUP"

say "two namespace VMs bound through the agent, with port security"
for i in 0 1; do
    ip netns add "${VMS[$i]}" 2>/dev/null || true
    ctl bind --port-id "${PORTS[$i]}" --mac-address "${MACS[$i]}" \
        --instance-uuid "${PORTS[$i]}" --network-id "$NET" \
        --netns "${VMS[$i]}" --port-security \
        --fixed-ip "${ADDRS[$i]%/*}" --security-group "$GROUP" >/dev/null
    ip -n "${VMS[$i]}" addr replace "${ADDRS[$i]}" dev eth0
done
ctl list

say "their chains"
for port in "${PORTS[@]}"; do
    qbr=qbr${port:0:11}
    echo "$qbr:"
    ip -br link show master "$qbr"
done
ovs-vsctl --columns=name,tag list Port "qvo${PORTS[0]:0:11}" \
    "qvo${PORTS[1]:0:11}"

say "ping from ${VMS[0]} (${ADDRS[0]%/*}) to ${VMS[1]} (${ADDRS[1]%/*})"
ip netns exec "${VMS[0]}" ping -c 3 -i 0.3 "${ADDRS[1]%/*}"

say "their filter: each port's chain jumps to its group's chain"
iptables -S "vfa-i${PORTS[1]:0:11}"
say "the group's rules, once for both ports"
iptables -S "vfa-gi-${GROUP:0:21}"

say "TCP from ${VMS[0]} to ${VMS[1]}: port 22 allowed, port 80 blocked"
# Something listening on both ports inside the second VM.
ip netns exec "${VMS[1]}" python3 -c '
import socketserver as ss, threading
h = ss.BaseRequestHandler
servers = [ss.TCPServer(("0.0.0.0", p), h) for p in (22, 80)]
[threading.Thread(target=s.serve_forever).start() for s in servers]
' >/dev/null 2>&1 &
sleep 0.5
for port in 22 80; do
    if ip netns exec "${VMS[0]}" python3 -c "
import socket, sys
socket.create_connection(('${ADDRS[1]%/*}', $port), timeout=2).close()
" 2>/dev/null; then
        echo "tcp port $port: connected"
    else
        echo "tcp port $port: blocked by the security group"
    fi
done
ip netns pids "${VMS[1]}" | xargs -r kill 2>/dev/null || true

say "done"
echo "Try: $VENV/bin/vifagent-ctl --config-file $CONF watch"
echo "Stop: tools/demo.sh stop"
