#!/usr/bin/env bash
# Start Debian's RabbitMQ (the Globus Compute Executor takes its results over AMQP;
# the Globus Compute tests point it here), listening on 127.0.0.1 only: AMQP 5672,
# epmd and the Erlang distribution port too. Idempotent; run as root.
set -euo pipefail
export ERL_EPMD_ADDRESS=127.0.0.1
conf=/etc/rabbitmq/rabbitmq-env.conf
if ! grep -q "^NODE_IP_ADDRESS=127.0.0.1" "$conf" 2>/dev/null; then
    mkdir -p /etc/rabbitmq
    cat >>"$conf" <<'CONF'
# funcx-flows CI: loopback only
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export ERL_EPMD_ADDRESS=127.0.0.1
CONF
fi
if rabbitmqctl -q status >/dev/null 2>&1; then
    echo "rabbitmq already running on 127.0.0.1:5672"
    exit 0
fi
rabbitmq-server -detached
# the node registers with epmd a moment after it was forked: until then
# await_startup finds no node at all
for _ in $(seq 1 120); do
    rabbitmqctl -q --timeout 120 await_startup >/dev/null 2>&1 && break
    sleep 1
done
rabbitmqctl -q status >/dev/null
echo "rabbitmq ready on 127.0.0.1:5672"
