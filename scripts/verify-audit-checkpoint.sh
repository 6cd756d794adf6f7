#!/bin/sh
# Checks the audit log's signed checkpoint with openssl alone: no clearing needed, on any machine
# that has the verdict key's public half (the daemon's <state dir>/verdict.key.pub). The same
# statement `clearing audit verify` checks (include/clearing/audit.h):
#   clearing-audit-checkpoint v2 / seq N / hash H / ts T, each line ending in a newline.
# With LOG, also that the log (its current file) holds record N with hash H: a log cut before
# the checkpointed record, or rewritten at it, fails. (The whole chain: `clearing audit verify`.)
#   usage: verify-audit-checkpoint.sh PUBKEY.pem CHECKPOINT [LOG]
#   exit 0: "Signature Verified Successfully" (and "record N is in LOG")
set -eu
key=$1 cp=$2 log=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The checkpoint is one line of JSON with its keys sorted: {"hash","key_id","seq","sig","ts"}.
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" "$cp"; }
seq=$(field seq) hash=$(field hash) ts=$(field ts) sig=$(field sig)
if [ -z "$sig" ]; then
    echo "$cp is not a signed (v2) checkpoint: a v1 one carries an HMAC that only the host's <log>.key checks" >&2
    exit 1
fi
printf 'clearing-audit-checkpoint v2\nseq %s\nhash %s\nts %s\n' "$seq" "$hash" "$ts" >"$tmp/statement"
printf '%s' "$sig" | base64 -d >"$tmp/signature"
openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/statement" -sigfile "$tmp/signature"
if [ -n "$log" ]; then
    if grep -q "\"hash\":\"$hash\".*\"seq\":$seq[,}]" "$log"; then
        echo "record $seq is in $log"
    else
        echo "record $seq with hash $hash is not in $log: the log was truncated or rewritten" >&2
        exit 1
    fi
fi
