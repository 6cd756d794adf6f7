#!/bin/sh
# The git commit the source tree $1 is, for `clearing version` (meson's vcs_tag runs this at every
# build; when it fails, the commit is "unknown"). Full hash, "-dirty" when tracked files differ
# from it. Only when $1 is itself the top of a git work tree: a source tarball unpacked inside
# some other repository (a packaging checkout) is not that repository's commit.
top=$(git -C "$1" rev-parse --show-toplevel 2>/dev/null) || exit 1
[ "$(cd "$1" && pwd -P)" = "$(cd "$top" && pwd -P)" ] || exit 1
exec git -C "$1" describe --always --dirty --abbrev=40 --exclude='*'
