#!/usr/bin/env bash
# Builds clearing's sandbox images from Debian packages: mmdebstrap writes a root filesystem from
# the host's apt mirror, `docker import` turns it into an image. Each image is tagged with a hash of
# its recipe (this script plus images/<name>.packages), so it is rebuilt only when the recipe changes;
# `clearing/<name>:latest` points at the current build.
#
#   images/build.sh            build every image that is missing (every images/*.packages)
#   images/build.sh default    build one
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'images: %s\n' "$*" >&2; }

build_one() {
    local name=$1 recipe="$here/$1.packages"
    [ -f "$recipe" ] || { log "no recipe $recipe"; return 1; }
    local tag
    tag=$(cat "$here/build.sh" "$recipe" | sha256sum | cut -c1-12)
    local ref="clearing/$name:$tag"
    if docker image inspect "$ref" >/dev/null 2>&1; then
        docker tag "$ref" "clearing/$name:latest"
        return 0
    fi
    log "building $ref (takes about a minute)"
    local pkgs
    pkgs=$(grep -v '^\s*#' "$recipe" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
    local tmp
    tmp=$(mktemp -d)
    # The sandbox user (uid/gid 1000) is the identity commands run as; the agent is root but holds
    # only the capabilities it needs to switch to that user and signal its processes.
    mmdebstrap --quiet --variant=minbase --include="$pkgs" \
        --customize-hook='echo "sandbox:x:1000:1000:clearing sandbox:/workspace:/bin/sh" >> "$1/etc/passwd"' \
        --customize-hook='echo "sandbox:x:1000:" >> "$1/etc/group"' \
        --customize-hook='mkdir -p "$1/workspace" "$1/opt/clearing" && chown 1000:1000 "$1/workspace"' \
        --customize-hook='rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"* "$1/usr/share/doc" "$1/usr/share/man"' \
        bookworm "$tmp/rootfs.tar" >/dev/null
    docker import \
        --change 'WORKDIR /workspace' \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/workspace LANG=C.UTF-8' \
        --change "LABEL io.clearing.image=$name io.clearing.recipe=$tag" \
        "$tmp/rootfs.tar" "$ref" >/dev/null
    rm -rf "$tmp"
    docker tag "$ref" "clearing/$name:latest"
    log "built $ref"
}

if [ $# -eq 0 ]; then
    set -- $(cd "$here" && ls *.packages | sed 's/\.packages$//')
fi
for n in "$@"; do build_one "$n"; done
