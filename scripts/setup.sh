#!/usr/bin/env bash
# Brings a Debian 12 host to the state clearing needs, doing only what is missing:
#   build dependencies, docker.io, gVisor's runsc (Debian 13's static build), runsc registered
#   as a Docker runtime with its own networking off, dockerd running, the sandbox images built.
# Idempotent: a second run changes nothing and takes a few seconds.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"

here=$(cd "$(dirname "$0")/.." && pwd)

PACKAGES=(
    build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
    libcurl4-openssl-dev libjansson-dev libgit2-dev libyaml-dev libsqlite3-dev libssl-dev
    libarchive-dev libmicrohttpd-dev libcmocka-dev
    docker.io mmdebstrap python3 python3-yaml git curl jq valgrind openssl universal-ctags gcovr
    python3-jsonschema
    mypy
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The OpenAPI lint (meson test openapi-lint) runs Redocly CLI, pinned in
# tools/openapi-lint/package-lock.json and installed by the test itself into the build directory
# with npm ci. It needs Node.js 20.19+ or 22.12+ with npm, which Debian 12's nodejs (18) is not:
# this machine class has NodeSource's 20.x; without it the lint fails saying so.
node_version=$(node --version 2>/dev/null || true)
case "$node_version" in
    v20.19.*|v20.[2-9][0-9].*|v22.1[2-9].*|v22.[2-9][0-9].*|v2[3-9].*|v[3-9][0-9].*) ;;
    *) log "warning: Node.js ${node_version:-(none)} cannot run the OpenAPI lint: install Node.js 20.19+ or 22.12+ and npm" ;;
esac
command -v npm >/dev/null || log "warning: npm is missing: the OpenAPI lint cannot install Redocly CLI"

# gVisor: Debian 13's runsc (systrap platform) is ~5x faster on real workloads than Debian 12's
# (ptrace). It is a static binary whose package has no dependencies, so it is fetched from the
# archive's `stable` suite with a private apt configuration: the host's sources stay untouched and
# nothing else is upgraded.
RUNSC_WANT="0.0~20240729"
have_runsc=$(dpkg-query -W -f='${Version}' runsc 2>/dev/null || true)
case "$have_runsc" in
    "$RUNSC_WANT"*) ;;
    *)
        log "installing runsc $RUNSC_WANT (have: ${have_runsc:-none})"
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        mkdir -p "$tmp/lists/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian stable main" \
            > "$tmp/sources.list"
        aptopts=(-o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=-
                 -o Dir::State::Lists="$tmp/lists" -o APT::Get::List-Cleanup=0)
        apt-get -q "${aptopts[@]}" update >/dev/null
        (cd "$tmp" && apt-get -q "${aptopts[@]}" download runsc >/dev/null 2>&1)
        deb=$(ls "$tmp"/runsc_*.deb 2>/dev/null | head -n1)
        [ -n "$deb" ] || die "could not download runsc from the stable suite"
        dpkg -i "$deb" >/dev/null
        ;;
esac
RUNSC=$(command -v runsc || echo /usr/sbin/runsc)
[ -x "$RUNSC" ] || die "runsc not found after install"

# Register runsc with dockerd. Merge into daemon.json, never clobber what an operator put there.
# runsc's own networking must be off on this host ("cannot run with network enabled in root
# network namespace"); sandboxes get no network anyway.
mkdir -p /etc/docker
python3 - "$RUNSC" <<'PY'
import json, os, sys
path = "/etc/docker/daemon.json"
runsc = sys.argv[1]
try:
    with open(path) as f:
        cfg = json.load(f)
except FileNotFoundError:
    cfg = {}
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
rts = cfg.setdefault("runtimes", {})
if rts.get("runsc") != want:
    rts["runsc"] = want
    tmp = path + ".clearing-tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.rename(tmp, path)
    print("changed")
PY

# Snapshots and forks (issue #22) need dockerd's experimental mode (checkpoint/restore). Merged
# into daemon.json like runsc above. It takes a dockerd restart (not a reload), which stops every
# running container: setup restarts dockerd only when no clearing sandbox runs, otherwise it says
# what to do and goes on (snapshots answer 501 until then; everything else works). The setting is
# written before dockerd is first started, so a fresh machine needs no restart.
python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
try:
    with open(path) as f:
        cfg = json.load(f)
except FileNotFoundError:
    cfg = {}
if cfg.get("experimental") is not True:
    cfg["experimental"] = True
    tmp = path + ".clearing-tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.rename(tmp, path)
PY

docker_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if docker_up && ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
    log "dockerd runs without runsc registered; reloading its configuration"
    pkill -HUP -x dockerd || true
    sleep 1
fi
if ! docker_up; then
    log "starting dockerd"
    if command -v systemctl >/dev/null && [ "$(systemctl is-system-running 2>/dev/null || true)" != offline ] \
        && systemctl start docker 2>/dev/null; then
        :
    else
        mkdir -p /var/log
        setsid dockerd >/var/log/clearing-dockerd.log 2>&1 < /dev/null &
    fi
    for _ in $(seq 1 60); do docker_up && break; sleep 0.5; done
    docker_up || die "dockerd did not come up; see /var/log/clearing-dockerd.log"
fi
docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' || die "dockerd does not list the runsc runtime"

if [ "$(docker info --format '{{.ExperimentalBuild}}' 2>/dev/null)" != true ]; then
    running=$(docker ps -q --filter label=io.clearing.owner | wc -l)
    if [ "$running" -gt 0 ]; then
        log "warning: dockerd runs without experimental mode (snapshots need it) and $running clearing sandbox(es) run:"
        log "  a dockerd restart would stop them. Destroy them (clearing rm), then run scripts/setup.sh again"
        log "  (or restart dockerd yourself); until then the snapshot routes answer 501"
    else
        log "restarting dockerd for experimental mode (snapshots); no clearing sandbox runs"
        if command -v systemctl >/dev/null && [ "$(systemctl is-system-running 2>/dev/null || true)" != offline ] \
            && systemctl restart docker 2>/dev/null; then
            :
        else
            pid=$(cat /var/run/docker.pid 2>/dev/null || true)
            if [ -n "$pid" ]; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            fi
            setsid dockerd >/var/log/clearing-dockerd.log 2>&1 < /dev/null &
        fi
        for _ in $(seq 1 60); do docker_up && break; sleep 0.5; done
        docker_up || die "dockerd did not come back after the restart; see /var/log/clearing-dockerd.log"
        [ "$(docker info --format '{{.ExperimentalBuild}}')" = true ] || log "warning: dockerd still runs without experimental mode"
    fi
fi

# The python image carries tools/ruff (clearing-ruff) with its npm packages, pinned in
# tools/ruff/package-lock.json: images/build.sh installs them with npm ci on the host, which also
# fills npm's cache, so a later rebuild needs the registry no more. Without npm that build fails.
command -v npm >/dev/null || log "warning: npm is missing: images/build.sh cannot install tools/ruff (clearing-ruff) into the python image"
# Images, rebuilt only when their recipe changes.
# A recipe whose first line says "built on demand" is left to whoever needs it (the CPython
# test-suite image: ~35 s to build, used only by `bench/run.sh cpython`, which builds it).
if [ "${CLEARING_SKIP_IMAGES:-0}" != 1 ]; then
    images=()
    for recipe in "$here"/images/*.packages; do
        head -n1 "$recipe" | grep -q 'built on demand' || images+=("$(basename "$recipe" .packages)")
    done
    "$here/images/build.sh" "${images[@]}"
fi
# The MCP test (meson test mcp-stdio) drives `clearing mcp` with the official MCP TypeScript SDK,
# pinned in tools/mcp-client/package-lock.json. The test installs it into the build directory
# with npm ci; setup fetches the pinned packages into npm's cache here (a throwaway npm ci), so
# that the test needs the registry no more. Without npm or the registry it says so and goes on.
if command -v npm >/dev/null; then
    mcp_tmp=$(mktemp -d)
    cp "$here/tools/mcp-client/package.json" "$here/tools/mcp-client/package-lock.json" "$mcp_tmp/"
    if ! (cd "$mcp_tmp" && npm ci --no-audit --no-fund --prefer-offline --ignore-scripts >/dev/null 2>&1); then
        log "warning: could not fetch the pinned MCP SDK (tools/mcp-client): mcp-stdio will try again"
    fi
    rm -rf "$mcp_tmp"
else
    log "warning: npm is missing: the mcp-stdio test cannot install the MCP SDK"
fi
log "ready"
