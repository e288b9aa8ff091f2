#!/bin/bash
# Start (or stop) a RabbitMQ cluster of several nodes on this one machine,
# beside the host's broker on 5672, which it never touches.
#
#   tools/start-rabbitmq-cluster.sh [--nodes 3] [--port 5681]
#       [--dist-port 25681] [--dir /var/lib/vifagent-rabbitmq-cluster]
#       [--name vifagent-rmq]
#   tools/start-rabbitmq-cluster.sh --stop [--dir ...] [--clean]
#
# Node i (1..N) is <name>-<i>@localhost with AMQP on 127.0.0.1:<port+i-1>,
# Erlang distribution on 127.0.0.1:<dist-port+i-1>, and its data, logs,
# configuration and pid file (the pid of its Erlang VM) in <dir>/node<i>.
# All nodes share the cookie <dir>/.erlang.cookie. Nodes 2..N join node 1.
# Idempotent: running nodes are left alone and a node started again (say
# after it was killed) rejoins its cluster from its own data. The last
# line printed is the multi-host transport_url of the cluster.
set -eu

NODES=3
PORT=5681
DIST_PORT=25681
DIR=/var/lib/vifagent-rabbitmq-cluster
NAME=vifagent-rmq
STOP=false
CLEAN=false
TIMEOUT=${RABBITMQ_START_TIMEOUT:-90}
# The node's own scripts: Debian's wrappers on PATH run the node as the
# rabbitmq user, with that user's cookie and no access to our files.
BIN=/usr/lib/rabbitmq/bin
# Erlang distribution on loopback only.
ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --dist-port) DIST_PORT=$2; shift 2 ;;
        --dir) DIR=$2; shift 2 ;;
        --name) NAME=$2; shift 2 ;;
        --stop) STOP=true; shift ;;
        --clean) CLEAN=true; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [ ! -x "$BIN/rabbitmq-server" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends rabbitmq-server
fi

node_name() {
    echo "$NAME-$1@localhost"
}

# Run a command in the environment of node $1.
node_env() {
    local i=$1 d="$DIR/node$1"
    shift
    env HOME="$DIR" \
        RABBITMQ_NODENAME="$(node_name "$i")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$((PORT + i - 1)) \
        RABBITMQ_DIST_PORT=$((DIST_PORT + i - 1)) \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$ERL_ARGS" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$d/mnesia" \
        RABBITMQ_LOG_BASE="$d/log" \
        RABBITMQ_PID_FILE="$d/rabbitmq.pid" \
        "$@"
}

ctl() {
    local i=$1
    shift
    node_env "$i" "$BIN/rabbitmqctl" -n "$(node_name "$i")" "$@"
}

running() {
    ctl "$1" -q await_startup --timeout 5 >/dev/null 2>&1
}

if $STOP; then
    for i in $(seq 1 "$NODES"); do
        [ -d "$DIR/node$i" ] || continue
        ctl "$i" -q stop >/dev/null 2>&1 || true
        pid=$(cat "$DIR/node$i/rabbitmq.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if $CLEAN; then
        rm -rf "$DIR"
    fi
    echo "RabbitMQ cluster in $DIR stopped"
    exit 0
fi

mkdir -p "$DIR"
if [ ! -s "$DIR/.erlang.cookie" ]; then
    (umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' |
        tr a-f A-F >"$DIR/.erlang.cookie")
    chmod 0400 "$DIR/.erlang.cookie"
fi

fresh=()
for i in $(seq 1 "$NODES"); do
    d="$DIR/node$i"
    if [ ! -d "$d/mnesia" ]; then
        fresh+=("$i")
    fi
    mkdir -p "$d/log"
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$((PORT + i - 1))
loopback_users.guest = true
EOF
    echo '[].' >"$d/enabled_plugins"
    : >"$d/rabbitmq-env.conf"
    if running "$i"; then
        continue
    fi
    # A session of its own: the node outlives this script and its caller.
    node_env "$i" setsid "$BIN/rabbitmq-server" >>"$d/server.out" 2>&1 \
        </dev/null &
done

for i in $(seq 1 "$NODES"); do
    waited=0
    until running "$i"; do
        waited=$((waited + 1))
        if [ "$waited" -gt "$TIMEOUT" ]; then
            echo "node $(node_name "$i") did not start:" >&2
            tail -n 30 "$DIR/node$i/server.out" >&2 || true
            exit 1
        fi
        sleep 1
    done
done

# A node that has never run joins node 1; one that has, rejoined by itself.
for i in "${fresh[@]}"; do
    [ "$i" -eq 1 ] && continue
    ctl "$i" -q stop_app >/dev/null
    ctl "$i" -q join_cluster "$(node_name 1)" >/dev/null
    ctl "$i" -q start_app >/dev/null
done

status=$(ctl 1 -q cluster_status --formatter json)
members=$(echo "$status" | grep -o '"running_nodes":\[[^]]*\]' |
    grep -o '@' | wc -l)
if [ "$members" -ne "$NODES" ]; then
    echo "only $members of $NODES nodes are running in the cluster" >&2
    ctl 1 cluster_status >&2 || true
    exit 1
fi

url=rabbit://
for i in $(seq 1 "$NODES"); do
    [ "$i" -gt 1 ] && url+=,
    url+="guest:guest@127.0.0.1:$((PORT + i - 1))"
done
echo "RabbitMQ cluster of $NODES nodes is running; transport_url:"
echo "$url/"
