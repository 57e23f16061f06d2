#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers AMQP on 127.0.0.1:5672 (guest/guest on loopback), for
# nebula-rabbit's tests. Idempotent: installs rabbitmq-server with apt-get only when it is missing,
# starts it (detached) only when nothing answers AMQP, then waits until it does.
#
#   RABBIT_PORT   the port to check (default 5672)
#   RABBIT_WAIT   seconds to wait for the broker (default 60)
set -euo pipefail

port="${RABBIT_PORT:-5672}"
wait_s="${RABBIT_WAIT:-60}"
log() { printf '.ci/rabbitmq.sh: %s\n' "$*"; }

# True when something on 127.0.0.1:$port answers the AMQP 0-9-1 protocol header with a frame
# (connection.start begins with frame type 1), not merely accepts TCP.
amqp_answers() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        [ "$(head -c 1 <&3 | od -An -tx1 | tr -d " \n")" = "01" ]
    ' _ "$port" 2>/dev/null
}

if amqp_answers; then
    log "RabbitMQ already answers AMQP on 127.0.0.1:$port; nothing to do"
    exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing rabbitmq-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y rabbitmq-server >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y rabbitmq-server >/dev/null; }
    # The package may have started the service itself.
    for _ in $(seq 1 10); do amqp_answers && break; sleep 0.5; done
    if amqp_answers; then
        log "installed; the package started RabbitMQ on 127.0.0.1:$port"
        exit 0
    fi
fi

if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    log "the RabbitMQ node runs but AMQP does not answer yet: waiting"
else
    log "no AMQP on 127.0.0.1:$port: starting rabbitmq-server -detached"
    rabbitmq-server -detached >/tmp/nebula-ci-rabbitmq.log 2>&1 || {
        cat /tmp/nebula-ci-rabbitmq.log >&2
        exit 1
    }
fi
deadline=$((SECONDS + wait_s))
until amqp_answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "RabbitMQ did not answer AMQP on 127.0.0.1:$port within ${wait_s}s;" \
            "see /tmp/nebula-ci-rabbitmq.log and /var/log/rabbitmq/" >&2
        exit 1
    fi
    sleep 0.5
done
log "RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?') answers AMQP on 127.0.0.1:$port"
