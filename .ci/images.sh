#!/usr/bin/env bash
# Test images and a local registry for the real-engine tests (nebula-docker/tests, tests/).
#
# What it does (idempotent; safe to run again at any time):
#   1. installs busybox-static with apt-get if it is missing;
#   2. builds nebula-test/busybox:latest FROM scratch with a static busybox: its default command
#      (/bin/serve) writes "$MESSAGE <hostname>" to /www/index.html and runs busybox httpd in the
#      foreground on ${PORT:-80};
#   3. builds nebula-test/busybox:v2, the same plus a marker file (so its image ID differs);
#   4. starts a registry on 127.0.0.1:5000 (Debian docker-registry, filesystem storage under
#      /tmp/nebula-registry) unless one already answers there;
#   5. pushes both images as 127.0.0.1:5000/nebula-test/busybox:{latest,v2}.
#
# Needs a running Docker engine (DOCKER_HOST or the default socket); it never stops or restarts it.
# Nothing is pulled from outside the machine.
set -euo pipefail

REGISTRY=127.0.0.1:5000
REGISTRY_DATA=/tmp/nebula-registry
IMAGE=nebula-test/busybox

log() { printf 'images.sh: %s\n' "$*"; }

apt_install() {
    log "installing $1 with apt-get"
    if ! apt-get install -y "$1" >/dev/null; then
        apt-get update >/dev/null
        apt-get install -y "$1" >/dev/null
    fi
}

if ! docker version >/dev/null 2>&1; then
    echo "images.sh: no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start dockerd first" >&2
    exit 1
fi

# 1. busybox-static
if ! dpkg -s busybox-static >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
    apt_install busybox-static
else
    log "busybox-static is installed"
fi

# 2 + 3. the images
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp /bin/busybox "$work/busybox"
cat >"$work/serve" <<'EOF'
#!/bin/sh
# Serves "$MESSAGE <hostname>" over HTTP on ${PORT:-80} until stopped.
mkdir -p /www
printf '%s %s\n' "${MESSAGE:-hello from nebula}" "$(hostname)" >/www/index.html
exec httpd -f -p "${PORT:-80}" -h /www
EOF
chmod 755 "$work/serve" "$work/busybox"
cat >"$work/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY serve /bin/serve
ENV PATH=/bin
EXPOSE 80
CMD ["/bin/serve"]
EOF
mkdir -p "$work/v2"
echo v2 >"$work/v2/VERSION"
cat >"$work/v2/Dockerfile" <<EOF
FROM $IMAGE:latest
COPY VERSION /VERSION
EOF

# The classic builder: no buildx is installed here and it needs nothing from outside. Its
# output (and its deprecation notice) is shown only when the build fails.
build() {
    local out
    log "building $1"
    if ! out=$(DOCKER_BUILDKIT=0 docker build -q --force-rm -t "$1" "$2" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "images.sh: building $1 failed" >&2
        exit 1
    fi
}
build "$IMAGE:latest" "$work"
build "$IMAGE:v2" "$work/v2"
log "built $IMAGE:latest = $(docker image inspect -f '{{.Id}}' "$IMAGE:latest")"
log "built $IMAGE:v2     = $(docker image inspect -f '{{.Id}}' "$IMAGE:v2")"

# 4. the registry
if curl -sf "http://$REGISTRY/v2/" >/dev/null; then
    log "a registry already answers on $REGISTRY"
else
    if ! command -v docker-registry >/dev/null 2>&1; then
        apt_install docker-registry
    fi
    config_dir=$(mktemp -d /tmp/nebula-registry-config.XXXXXX)
    mkdir -p "$REGISTRY_DATA"
    cat >"$config_dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
    log "starting docker-registry on $REGISTRY (storage $REGISTRY_DATA, log $config_dir/registry.log)"
    setsid nohup docker-registry serve "$config_dir/config.yml" >"$config_dir/registry.log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        curl -sf "http://$REGISTRY/v2/" >/dev/null && break
        sleep 0.1
    done
    if ! curl -sf "http://$REGISTRY/v2/" >/dev/null; then
        echo "images.sh: the registry did not answer on $REGISTRY; see $config_dir/registry.log" >&2
        exit 1
    fi
    log "registry is up"
fi

# 5. push
for tag in latest v2; do
    docker tag "$IMAGE:$tag" "$REGISTRY/$IMAGE:$tag"
    docker push -q "$REGISTRY/$IMAGE:$tag" >/dev/null
    log "pushed $REGISTRY/$IMAGE:$tag"
done
log "done"
