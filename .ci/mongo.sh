#!/usr/bin/env bash
# Makes sure a MongoDB-wire-compatible server answers on 127.0.0.1:27017, for nebula-mongo's
# tests. No mongod exists for these machines, so this runs secantusdb (PyPI; a single-node
# replica set speaking the MongoDB wire protocol, on WiredTiger). Idempotent: creates a venv and
# installs secantusdb only when missing, starts the server in the background only when nothing
# answers the MongoDB handshake, then waits until it does.
#
# The server runs with --enable-test-commands (configureFailPoint), which nebula-mongo's
# retry test uses to inject transient errors; it listens on loopback only.
#
#   MONGO_PORT     the port (default 27017)
#   MONGO_WAIT     seconds to wait for the server (default 60)
#   MONGO_VENV     the venv (default /tmp/nebula-venv-mongo)
#   MONGO_DATA     the storage dir (default /tmp/nebula-secantus-data)
#
# A real MongoDB instead: start it yourself and set NEBULA_TEST_MONGODB_URL for the tests.
set -euo pipefail

port="${MONGO_PORT:-27017}"
wait_s="${MONGO_WAIT:-60}"
venv="${MONGO_VENV:-/tmp/nebula-venv-mongo}"
data="${MONGO_DATA:-/tmp/nebula-secantus-data}"
server_log=/tmp/nebula-ci-secantus.log
log() { printf '.ci/mongo.sh: %s\n' "$*"; }

# True when something on 127.0.0.1:$port answers a MongoDB OP_MSG `hello` with a reply
# (opCode 2013 in the reply header), not merely accepts TCP.
mongo_answers() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        # OP_MSG: length 52, requestID 1, responseTo 0, opCode 2013, flags 0, section kind 0,
        # BSON {hello: 1, $db: "admin"}.
        printf "\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00" >&3
        printf "\x1f\x00\x00\x00\x10hello\x00\x01\x00\x00\x00\x02\x24db\x00\x06\x00\x00\x00admin\x00\x00" >&3
        [ "$(head -c 16 <&3 | od -An -tx1 -j 12 | tr -d " \n")" = "dd070000" ]
    ' _ "$port" 2>/dev/null
}

if mongo_answers; then
    log "a MongoDB-compatible server already answers on 127.0.0.1:$port; nothing to do"
    exit 0
fi

if ! "$venv/bin/python" -c 'import secantus' >/dev/null 2>&1; then
    log "installing secantusdb into the venv $venv (pip)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check secantusdb
fi

mkdir -p "$data"
log "starting secantusdb $("$venv/bin/pip" show secantusdb 2>/dev/null | sed -n 's/^Version: //p')" \
    "on 127.0.0.1:$port (storage $data, log $server_log)"
# Its own session, so it outlives this script and the shell that ran it.
setsid nohup "$venv/bin/python" -m secantus --host 127.0.0.1 --port "$port" \
    --storage-path "$data" --enable-test-commands --log-level WARNING \
    >"$server_log" 2>&1 </dev/null &
pid=$!
deadline=$((SECONDS + wait_s))
until mongo_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "secantusdb exited; its log ($server_log):" >&2
        cat "$server_log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "secantusdb did not answer on 127.0.0.1:$port within ${wait_s}s; see $server_log" >&2
        exit 1
    fi
    sleep 0.3
done
log "secantusdb (pid $pid) answers on 127.0.0.1:$port"
