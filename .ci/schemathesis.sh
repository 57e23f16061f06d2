#!/usr/bin/env bash
# schemathesis (PyPI) against the OpenAPI document of a running nebula-api-manager: every
# operation of /api/v2/openapi.json, a fixed seed and a bounded number of examples; fails on any
# 5xx, any status the document does not list, and any body that does not conform to it.
#
#   needs: ${CARGO_TARGET_DIR:-target}/debug/nebula-api-manager (`cargo build --workspace --bins`),
#          python3 with venv, curl, PyPI.
#   env:   NEBULA_ST_VENV (default /tmp/nebula-venv-st, reused), NEBULA_ST_SEED, NEBULA_ST_EXAMPLES,
#          NEBULA_PYTHON (default python3), NEBULA_ST_ARGS (more `schemathesis run` arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '.ci/schemathesis.sh: %s\n' "$*"; }

SCHEMATHESIS_VERSION=4.32.5
VENV=${NEBULA_ST_VENV:-/tmp/nebula-venv-st}
SEED=${NEBULA_ST_SEED:-20260522}
EXAMPLES=${NEBULA_ST_EXAMPLES:-25}
PYTHON=${NEBULA_PYTHON:-python3}
BIN=${CARGO_TARGET_DIR:-target}/debug/nebula-api-manager

[ -x "$BIN" ] || { echo "$BIN is missing: run cargo build --workspace --bins first" >&2; exit 1; }

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q " $SCHEMATHESIS_VERSION\$"; then
    if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
        log "installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y python3 python3-venv >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y python3 python3-venv >/dev/null; }
        PYTHON=python3
    fi
    log "installing schemathesis $SCHEMATHESIS_VERSION in $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d /tmp/nebula-st.XXXXXX)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
user=st-admin
password=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))')
base="http://127.0.0.1:$port"

log "starting nebula-api-manager on $base"
BASIC_AUTH_USER=$user BASIC_AUTH_PASSWORD=$password NEBULA_BCRYPT_COST=4 RUST_LOG=warn NEBULA_LOG_FORMAT=json \
    "$BIN" --bind "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -fsS -u "$user:$password" "$base/api/v2/status" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; echo "the API manager exited" >&2; exit 1; }
    sleep 0.1
done
curl -fsS -u "$user:$password" "$base/api/v2/status" >/dev/null

log "schemathesis run: seed $SEED, at most $EXAMPLES examples per operation"
status=0
# From the temporary directory: schemathesis keeps a cache (.schemathesis/) in its working directory.
(cd "$work" && "$VENV/bin/schemathesis" run "$base/api/v2/openapi.json" \
    --url "$base" \
    --auth "$user:$password" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --seed "$SEED" \
    --max-examples "$EXAMPLES" \
    --workers 1 \
    --generation-database none \
    --no-color ${NEBULA_ST_ARGS:-}) || status=$?

if grep -E '"(level|levelname)":"ERROR"| ERROR ' "$work/server.log" >&2; then
    log "the API manager logged errors (above)"
    status=1
fi
if ! kill -0 "$server" 2>/dev/null; then
    cat "$work/server.log" >&2
    log "the API manager died during the run"
    status=1
fi
[ "$status" -eq 0 ] && log "passed" || log "FAILED (exit $status)"
exit "$status"
