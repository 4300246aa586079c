#!/usr/bin/env bash
# make compose-check: docker-compose.yml, built and run for real.
#
# Starts a private dockerd (--bridge=none --iptables=false, its own data root under
# the cache dir, so images survive between runs), builds the base images from Debian
# packages (no registry is reachable here), builds the greenctl image with the
# compose file, starts the stack with every service on the host network
# (tests/compose/override.yml, servers on 127.0.0.1, ports away from the host's
# Postgres 5432 and Redis 6379), waits for every healthcheck, submits a small
# experiment from the scheduler container (`greenctl submit --wait`), checks its
# report, checks Flower answers 401 without and 200 with credentials, then
# `down -v` and checks that no container, network or volume is left. dockerd is
# stopped on every exit (trap).
#
# Exit 0: passed, or skipped with COMPOSE_CHECK_OPTIONAL=1 (how `make test` calls it)
# when no Docker engine can be started here (the reason is printed). Exit 1: failed.
#
# Settings (environment): COMPOSE_CHECK_CACHE (default ~/.cache/greenctl-compose),
# COMPOSE_CHECK_PORTS="PG REDIS OLLAMA FLOWER" (default "55432 56379 51434 55555"),
# PY (a Python with PyYAML; default python3).
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/compose
CACHE=${COMPOSE_CHECK_CACHE:-$HOME/.cache/greenctl-compose}
PY=${PY:-python3}
OPTIONAL=${COMPOSE_CHECK_OPTIONAL:-0}
PROJECT=greenctl-check
RUN=/run/greenctl-compose-check
T0=$(date +%s)
SKIPPED=0

log() { echo "compose-check [$(( $(date +%s) - T0 ))s]: $*" >&2; }
cannot() {
  if [ "$OPTIONAL" = 1 ]; then
    log "SKIPPED, no Docker engine here: $* (run \`make compose-check\` where one can start)"
    SKIPPED=1; exit 0
  fi
  log "CANNOT RUN: $*"; exit 1
}
fail() { log "FAILED: $*"; exit 1; }

# --- tools: Debian's docker.io, docker-compose (or the compose plugin), debootstrap --------
[ "$(id -u)" = 0 ] || cannot "starting dockerd needs root"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
    >/dev/null 2>&1 || cannot "apt-get install ${missing[*]} failed"
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi

# --- a private dockerd, stopped on every exit -----------------------------------------------
mkdir -p "$CACHE/docker" "$RUN"
export DOCKER_HOST=unix://$RUN/docker.sock
WORK=$(mktemp -d)
DOCKERD_PID=
STACK_UP=0
cleanup() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "logs of the stack (last 40 lines per service):"
      compose ps
      compose logs --no-color --tail=40
    fi
    compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; \
           docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"; \
           docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    if [ -n "$left" ]; then log "FAILED: left behind after down -v: $left"; rc=1; fi
    docker image prune -f >/dev/null 2>&1   # dangling layers of older inputs; tagged images stay as cache
  fi
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
    umount "$RUN/exec/netns/default" 2>/dev/null   # dockerd's bind mount of the host netns
  fi
  rm -rf "$WORK"
  if [ "$rc" = 0 ] && [ "$SKIPPED" = 0 ]; then log "PASSED in $(( $(date +%s) - T0 )) s"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -S "$RUN/docker.sock" ] && docker info >/dev/null 2>&1; then
  fail "a dockerd already answers on $RUN/docker.sock (another compose-check?)"
fi
dockerd --bridge=none --iptables=false --ip6tables=false \
  --data-root "$CACHE/docker" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
  -H "$DOCKER_HOST" >"$CACHE/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -5 "$CACHE/dockerd.log"; DOCKERD_PID=; cannot "dockerd exited (log above)"; }
  sleep 0.5
done
docker info >/dev/null 2>&1 || { tail -5 "$CACHE/dockerd.log"; cannot "dockerd did not answer within 30 s"; }
log "dockerd $(docker version --format '{{.Server.Version}}') up; compose: ${COMPOSE[*]}"

# --- base images from Debian packages, cached by a hash of their inputs ---------------------
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
INCLUDE=python3,python3-venv,ca-certificates,postgresql,redis-server,redis-tools
KEY=$(printf '%s' "$SUITE minbase $INCLUDE $MIRROR v1" | sha256sum | cut -c1-12)
ROOTFS_TAR=$CACHE/$SUITE-$KEY.tar
ROOTFS_IMAGE=greenctl-check/rootfs:$KEY
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
if ! have_image "$ROOTFS_IMAGE"; then
  if [ ! -s "$ROOTFS_TAR" ]; then
    log "debootstrap --variant=minbase $SUITE (+ $INCLUDE)"
    rm -rf "$CACHE/rootfs.tmp"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$CACHE/rootfs.tmp" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || { tail -5 "$CACHE/debootstrap.log"; fail "debootstrap failed"; }
    rm -rf "$CACHE"/rootfs.tmp/var/cache/apt/archives/*.deb "$CACHE"/rootfs.tmp/var/lib/apt/lists/*
    tar -C "$CACHE/rootfs.tmp" --numeric-owner -cf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$CACHE/rootfs.tmp"
  fi
  log "docker import $ROOTFS_TAR"
  docker import "$ROOTFS_TAR" "$ROOTFS_IMAGE" >/dev/null
fi
# Build context: this folder plus host-ca/, the host's own CA certificates (see python.Dockerfile).
CTX=$WORK/context
mkdir -p "$CTX/host-ca"
cp "$HERE"/*.Dockerfile "$HERE"/*.sh "$CTX/"
cp /usr/local/share/ca-certificates/*.crt "$CTX/host-ca/" 2>/dev/null || true
build_base() {   # build_base NAME DOCKERFILE [FILE...]: tag from the rootfs key and the files' hash
  local name=$1 file=$2; shift 2
  local tag; tag=greenctl-check/$name:$( (echo "$KEY"; cat "$CTX/$file" "$@") | sha256sum | cut -c1-12)
  if ! have_image "$tag"; then
    log "building $tag"
    docker build -q --network host --build-arg "ROOTFS=$ROOTFS_IMAGE" -f "$CTX/$file" -t "$tag" "$CTX" \
      >"$WORK/build-$name.log" 2>&1 || { tail -20 "$WORK/build-$name.log" >&2; fail "building $tag failed"; }
  fi
  echo "$tag"
}
export CHECK_PYTHON_IMAGE CHECK_POSTGRES_IMAGE CHECK_REDIS_IMAGE
CHECK_PYTHON_IMAGE=$(build_base python python.Dockerfile "$CTX"/host-ca/*)
CHECK_POSTGRES_IMAGE=$(build_base postgres postgres.Dockerfile "$HERE/postgres-entrypoint.sh")
CHECK_REDIS_IMAGE=$(build_base redis redis.Dockerfile)

# --- the stack: the user's compose file made host-network, plus the test override ----------
read -r CHECK_PG_PORT CHECK_REDIS_PORT CHECK_OLLAMA_PORT CHECK_FLOWER_PORT <<<"${COMPOSE_CHECK_PORTS:-55432 56379 51434 55555}"
for port in "$CHECK_PG_PORT" "$CHECK_REDIS_PORT" "$CHECK_OLLAMA_PORT" "$CHECK_FLOWER_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port on 127.0.0.1 is taken: choose others with COMPOSE_CHECK_PORTS=\"PG REDIS OLLAMA FLOWER\""
  fi
done
secret() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
export CHECK_ROOT=$ROOT CHECK_DIR=$HERE CHECK_PG_PORT CHECK_REDIS_PORT CHECK_OLLAMA_PORT CHECK_FLOWER_PORT
# The secrets reach compose through its environment, never a command line.
export GREENCTL_POSTGRES_PASSWORD GREENCTL_REDIS_PASSWORD GREENCTL_FLOWER_PASSWORD GREENCTL_FLOWER_USER=check
GREENCTL_POSTGRES_PASSWORD=$(secret) GREENCTL_REDIS_PASSWORD=$(secret) GREENCTL_FLOWER_PASSWORD=$(secret)
"$PY" "$HERE/host_network.py" "$ROOT/docker-compose.yml" "$WORK/stack.yml"
compose() { "${COMPOSE[@]}" --ansi never -p "$PROJECT" -f "$WORK/stack.yml" -f "$HERE/override.yml" "$@"; }
compose config -q || fail "compose config rejected docker-compose.yml + tests/compose/override.yml"

log "building the greenctl image (Dockerfile, BASE_IMAGE=$CHECK_PYTHON_IMAGE)"
compose build scheduler >"$CACHE/last-build.log" 2>&1 \
  || { tail -30 "$CACHE/last-build.log"; fail "image build failed (whole log: $CACHE/last-build.log)"; }

log "docker compose up -d"
STACK_UP=1
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "compose up failed"; }
services=$(compose config --services)
deadline=$(( $(date +%s) + 240 ))
while :; do
  waiting=()
  for s in $services; do
    id=$(compose ps -q "$s")
    h=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id" 2>/dev/null || echo missing)
    [ "$h" = healthy ] || waiting+=("$s:$h")
  done
  [ ${#waiting[@]} = 0 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "not healthy within 240 s: ${waiting[*]}"
  sleep 2
done
log "every service healthy: $(echo $services)"

# --- a small experiment from the scheduler container ---------------------------------------
SAMPLES=6
log "greenctl submit --wait ($SAMPLES samples, smollm2:135m-instruct q4_1, embedded engine)"
compose exec -T scheduler sh -euc '
  data=$(python -c "import importlib.resources as r; print(r.files(\"greenctl\") / \"data\" / \"financial_sentiment.csv\")")
  cat >/tmp/check.yaml <<EOF
name: compose-check
dataset: {path: $data, text_column: text, label_column: label,
          labels: [positive, negative, neutral], stratify: true, seed: 7, sample: '"$SAMPLES"'}
prompt: {template: label-only, few_shot: 0, output: label}
models:
  - {name: "smollm2:135m-instruct", engine: embedded, variants: [q4_1],
     params: {max_tokens: 4, temperature: 0.0, seed: 0}}
repeats: 1
EOF
  greenctl submit --wait --timeout 420 --json /tmp/check.yaml >/tmp/submit.json
  id=$(python -c "import json; print(json.load(open(\"/tmp/submit.json\"))[\"experiment_id\"])")
  greenctl report "$id" --format json' >"$WORK/report.json" 2>"$WORK/submit.err" \
  || { tail -20 "$WORK/submit.err"; fail "greenctl submit --wait / report failed in the scheduler container"; }
"$PY" - "$WORK/report.json" "$SAMPLES" <<'EOF' || fail "the report is not what 6 finished inferences give"
import json, sys
report, samples = json.load(open(sys.argv[1])), int(sys.argv[2])
[v] = report["variants"]
problems = [f"{k}={v[k]!r}, expected {want}" for k, want in
            (("n", samples), ("n_failed", 0), ("variant", "q4_1")) if v.get(k) != want]
if not (v.get("accuracy") is not None and 0 <= v["accuracy"] <= 1):
    problems.append(f"accuracy={v.get('accuracy')!r}, expected a fraction")
if not v.get("energy_method"):
    problems.append("energy_method missing: every energy figure says how it was obtained")
if problems:
    sys.exit("compose-check: report: " + "; ".join(problems))
print(f"compose-check: report: {v['n']} inferences of {v['variant']}, accuracy {v['accuracy']:.2f}, "
      f"energy {v['energy_method']}")
EOF

# --- Flower: basic auth required ---------------------------------------------------------------
"$PY" - <<'EOF' || fail "Flower's basic auth"
import base64, os, urllib.error, urllib.request
url = f"http://127.0.0.1:{os.environ['CHECK_FLOWER_PORT']}/"
def status(headers):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
token = base64.b64encode(f"{os.environ['GREENCTL_FLOWER_USER']}:{os.environ['GREENCTL_FLOWER_PASSWORD']}".encode()).decode()
got = (status({}), status({"Authorization": f"Basic {token}"}))
print(f"compose-check: Flower {url}: {got[0]} without credentials, {got[1]} with them")
raise SystemExit(0 if got == (401, 200) else "expected 401 then 200")
EOF
