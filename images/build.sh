#!/usr/bin/env bash
# Builds clearing's sandbox images from Debian packages: mmdebstrap writes a root filesystem from
# the host's apt mirror, `docker import` turns it into an image. Each image is tagged with a hash of
# its recipe (this script plus images/<name>.packages, plus the files of each tools/<tool> the recipe
# names in a `# with-tool: <tool>` line), so it is rebuilt only when the recipe changes;
# `clearing/<name>:latest` points at the current build.
#
# A `# with-tool: ruff` line installs tools/ruff (its wrapper and its npm packages, pinned in its
# package-lock.json and installed with npm ci on the host) under /opt/clearing/ruff, and links its
# launcher tools/ruff/clearing-ruff as /usr/local/bin/clearing-ruff. The recipe must list nodejs.
#
#   images/build.sh            build every image that is missing (every images/*.packages)
#   images/build.sh default    build one
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'images: %s\n' "$*" >&2; }

# The files of tools/<tool> that go into the image, in a stable order (node_modules is not one:
# package-lock.json pins it).
tool_files() {
    local dir="$here/../tools/$1"
    [ -d "$dir" ] || { log "no tool $dir"; return 1; }
    (cd "$dir" && find . -path ./node_modules -prune -o -type f -print | LC_ALL=C sort | xargs cat)
}

# Copies tools/<tool> into <dest>/<tool> and installs its pinned npm packages there (npm ci, from
# npm's cache when scripts/setup.sh filled it, else from the registry) when it has a
# package-lock.json.
install_tool() {
    local tool=$1 dest=$2/$1
    mkdir -p "$dest"
    tar -C "$here/../tools/$tool" --exclude=./node_modules -cf - . | tar -C "$dest" -xf -
    [ -f "$dest/package-lock.json" ] || return 0   # a tool without npm packages (tools/pycheck)
    command -v npm >/dev/null || { log "npm is missing: cannot install tools/$tool into the image"; return 1; }
    if ! (cd "$dest" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline >/dev/null); then
        log "npm ci failed for tools/$tool (is the registry or npm's cache reachable? scripts/setup.sh fills the cache)"
        return 1
    fi
}

build_one() {
    local name=$1 recipe="$here/$1.packages"
    [ -f "$recipe" ] || { log "no recipe $recipe"; return 1; }
    local tools tool
    tools=$(sed -n 's/^#[[:space:]]*with-tool:[[:space:]]*\([a-z0-9-]*\)[[:space:]]*$/\1/p' "$recipe")
    local tag
    tag=$({ cat "$here/build.sh" "$recipe"; for tool in $tools; do tool_files "$tool"; done; } |
        sha256sum | cut -c1-12)
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
    local hooks=()
    for tool in $tools; do
        install_tool "$tool" "$tmp/tools" || { rm -rf "$tmp"; return 1; }
        hooks+=(--customize-hook="cp -R '$tmp/tools/$tool' \"\$1/opt/clearing/$tool\" && chown -R 0:0 \"\$1/opt/clearing/$tool\" && ln -s /opt/clearing/$tool/clearing-$tool \"\$1/usr/local/bin/clearing-$tool\"")
    done
    # The sandbox user (uid/gid 1000) is the identity commands run as; the agent is root but holds
    # only the capabilities it needs to switch to that user and signal its processes.
    mmdebstrap --quiet --variant=minbase --include="$pkgs" \
        --customize-hook='echo "sandbox:x:1000:1000:clearing sandbox:/workspace:/bin/sh" >> "$1/etc/passwd"' \
        --customize-hook='echo "sandbox:x:1000:" >> "$1/etc/group"' \
        --customize-hook='mkdir -p "$1/workspace" "$1/opt/clearing" && chown 1000:1000 "$1/workspace"' \
        "${hooks[@]}" \
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
