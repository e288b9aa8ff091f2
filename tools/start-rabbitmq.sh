#!/bin/bash
# Install (when missing) and start RabbitMQ without systemd, then wait
# until it accepts AMQP on 127.0.0.1:5672 (or, with --cluster N, start a
# cluster of N nodes on ports of its own). Idempotent: a running broker is
# left alone. The default guest/guest account only logs in over loopback,
# which is all the agent and its tests use.
set -eu

# --cluster N [options]: a cluster of N nodes on other ports, beside the
# broker on 5672 (see start-rabbitmq-cluster.sh for the options).
if [ "${1:-}" = --cluster ]; then
    exec "$(dirname "$0")/start-rabbitmq-cluster.sh" --nodes "$2" "${@:3}"
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends rabbitmq-server
fi

listening() {
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

if listening && rabbitmqctl -q status >/dev/null 2>&1; then
    echo "RabbitMQ is running"
    exit 0
fi

# Debian's package may have started it under an init system we do not
# have; make sure no half-started node is left, then start detached.
if ! rabbitmqctl -q status >/dev/null 2>&1; then
    rabbitmq-server -detached
fi
for _ in $(seq 1 120); do
    if listening && rabbitmqctl -q await_startup >/dev/null 2>&1; then
        echo "RabbitMQ is running"
        exit 0
    fi
    sleep 1
done
echo "RabbitMQ did not start" >&2
exit 1
