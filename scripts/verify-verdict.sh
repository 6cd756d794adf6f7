#!/bin/sh
# Checks a commit's signed verdict with git and openssl alone: no clearing needed, on any
# machine that has the verdict key's public half (the daemon's <state dir>/verdict.key.pub).
# The same statement `clearing verify` checks (include/clearing/verdict.h):
#   clearing-verdict-v1 / tree / parent / every Clearing-* trailer but the signature, in order.
#   usage: verify-verdict.sh PUBKEY.pem COMMIT [REPO]     exit 0: "Signature Verified Successfully"
set -eu
key=$1 commit=$2 repo=${3:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$repo" cat-file commit "$commit" | sed '1,/^$/d' | git interpret-trailers --parse >"$tmp/trailers"
{
    echo clearing-verdict-v1
    echo "tree $(git -C "$repo" rev-parse "$commit^{tree}")"
    echo "parent $(git -C "$repo" rev-parse -q --verify "$commit^1" || echo none)"
    grep '^Clearing-' "$tmp/trailers" | grep -v '^Clearing-Signature:' || true
} >"$tmp/statement"
sed -n 's/^Clearing-Signature: ed25519 [0-9a-f]* //p' "$tmp/trailers" | base64 -d >"$tmp/signature"
openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/statement" -sigfile "$tmp/signature"
