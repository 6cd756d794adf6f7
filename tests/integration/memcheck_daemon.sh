#!/usr/bin/env bash
# The daemon under valgrind memcheck through a create / exec / streamed exec / file / destroy loop:
# no memory error at all, and no block definitely, indirectly or possibly lost at exit. TAP.
#   usage: memcheck_daemon.sh PATH/TO/clearing
#
# Controls first: the same valgrind options and the same reading of its report must find the
# errors and the three kinds of leak in a small program that has them; valgrind must have run
# the daemon (its report names the command) and the daemon must have answered every request.
set -u
CLEARING=${1:?usage: memcheck_daemon.sh PATH/TO/clearing}
if ! command -v valgrind >/dev/null; then echo "1..0 # SKIP valgrind is not installed"; exit 0; fi
D=$(mktemp -d /tmp/clearing-memcheck.XXXXXX)
vg=
trap '[ -n "$vg" ] && kill -KILL "$vg" 2>/dev/null; rm -rf "$D"' EXIT
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

# Every leak kind is an error (and so counts in ERROR SUMMARY and the exit status); reachable
# blocks are not leaks (a daemon that exits may keep what it will never free).
VALGRIND=(valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible
          --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=9 --num-callers=40)

# "ERRORS DEFINITE INDIRECT POSSIBLE" (blocks) from a report, or "" when the report did not get
# as far as its leak check. "All heap blocks were freed" has no LEAK SUMMARY: all zero then.
report() {
    awk '{ gsub(/,/, "") }
         /HEAP SUMMARY:/ { heap = 1 }
         /ERROR SUMMARY:/ { errors = $4; summary = 1 }
         /definitely lost:/ { d = $7 } /indirectly lost:/ { i = $7 } /possibly lost:/ { p = $7 }
         END { if (heap && summary) printf "%d %d %d %d\n", errors, d, i, p }' "$1"
}

# ---- control: a program with an error and each kind of leak ----
cat >"$D/leaky.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
struct node { struct node *next; };
static char *middle;
int main(void)
{
    struct node *head = malloc(sizeof(*head));  /* definitely lost ... */
    head->next = malloc(sizeof(*head));         /* ... and this, through it, indirectly */
    head->next->next = NULL;
    head = NULL;
    char *block = malloc(100);                  /* only a pointer into it stays: possibly */
    middle = block + 10;
    block = NULL;
    int *unset = malloc(sizeof(*unset));
    if (*unset == 42)                           /* a jump on an uninitialised value */
        puts("42");
    free(unset);
    return middle == NULL;
}
EOF
if cc -O0 -g -o "$D/leaky" "$D/leaky.c"; then
    "${VALGRIND[@]}" --log-file="$D/leaky.log" "$D/leaky" >/dev/null 2>&1
    rc=$?
    read -r e d i p <<<"$(report "$D/leaky.log")"
    check "control: valgrind fails a program with an error and leaks (exit $rc)" '[ "$rc" = 9 ]'
    check "control: the report's errors, definite, indirect and possible leaks are read (${e:-?} ${d:-?} ${i:-?} ${p:-?})" \
        '[ "${e:-0}" -ge 4 ] && [ "${d:-0}" -ge 1 ] && [ "${i:-0}" -ge 1 ] && [ "${p:-0}" -ge 1 ]'
else
    not_ok "control: cannot compile the leaky program with cc"
fi

# Debian 12's valgrind (3.19) does not implement openat2 (system call 437), which the kernel has:
# under it the daemon's file requests fail with ENOSYS, and only their error path is checked.
# They must then answer 500 with that error, and the round trip is reported as skipped.
cat >"$D/openat2.c" <<'EOF'
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY};
    return syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how)) < 0 ? errno : 0;
}
EOF
openat2_missing=0
if cc -o "$D/openat2" "$D/openat2.c" && "$D/openat2"; then
    valgrind -q --log-file="$D/openat2.log" "$D/openat2" || openat2_missing=1
else
    not_ok "control: openat2 works outside valgrind"
fi
no_openat2() { [ "$openat2_missing" = 1 ]; }

# ---- the daemon ----
"${VALGRIND[@]}" --log-file="$D/vg.log" \
    "$CLEARING" --state-dir "$D/state" serve --socket "$D/c.sock" >"$D/out" 2>&1 &
vg=$!
for _ in $(seq 1 1200); do [ -S "$D/c.sock" ] && break; kill -0 "$vg" 2>/dev/null || break; sleep 0.1; done
check "the daemon listens under valgrind" '[ -S "$D/c.sock" ]'
check "valgrind's report names the daemon" 'grep -q "^==$vg== Command: $CLEARING .*serve --socket $D/c.sock" "$D/vg.log"'

# METHOD PATH EXPECTED-STATUS [curl arguments]: the body lands in $D/body; wrong answers counted.
answered=0; wrong=0
req() {
    local method=$1 path=$2 want=$3; shift 3
    local got
    got=$(curl -s -o "$D/body" -w '%{http_code}' --unix-socket "$D/c.sock" -X "$method" "$@" \
          "http://x$path")
    if [ "$got" = "$want" ]; then answered=$((answered + 1));
    else wrong=$((wrong + 1)); echo "# $method $path: $got, expected $want: $(head -c 300 "$D/body")"; fi
}
file_req() {
    if no_openat2; then
        req "$1" "$2" 500 "${@:4}"
        grep -q "Function not implemented" "$D/body" || { wrong=$((wrong + 1)); echo "# $1 $2: $(head -c 300 "$D/body")"; }
    else
        req "$@"
    fi
}
for _ in 1 2 3; do
    req POST /v1/sandboxes 201 -d '{}'
    id=$(python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])' <"$D/body" 2>/dev/null) || id=none
    req POST "/v1/sandboxes/$id/exec" 200 -d '{"argv":["echo","hi"]}'
    python3 -c 'import json,sys;sys.exit(json.load(sys.stdin)["result"]["stdout"]!="hi\n")' <"$D/body" 2>/dev/null \
        || { wrong=$((wrong + 1)); echo "# exec: $(head -c 300 "$D/body")"; }
    req POST "/v1/sandboxes/$id/exec?stream=true" 200 -d '{"shell":"echo x; exit 3"}'
    grep -q '"exit_code":3' "$D/body" || { wrong=$((wrong + 1)); echo "# stream: $(head -c 300 "$D/body")"; }
    file_req PUT "/v1/sandboxes/$id/files/f" 201 --data-binary @/etc/hostname
    file_req GET "/v1/sandboxes/$id/files/f" 200
    no_openat2 || cmp -s "$D/body" /etc/hostname || { wrong=$((wrong + 1)); echo "# the file came back different"; }
    req POST "/v1/sandboxes/$id/exec" 400 -d '{bad json'
    req DELETE "/v1/sandboxes/$id" 204
done
execs=$(curl -s --unix-socket "$D/c.sock" http://x/metrics | awk '/^clearing_execs_total /{print $2}')
check "the daemon served every request of the loop ($answered answered, $wrong wrong)" \
    '[ "$answered" = 21 ] && [ "$wrong" = 0 ]'
check "the loop ran under memcheck (execs: '$execs', expected 6)" '[ "$execs" = 6 ]'
if no_openat2; then
    ok "files written and read back under memcheck # SKIP $(valgrind --version) lacks openat2: only the error path ran"
else
    ok "files written and read back under memcheck"
fi

# Stops on SIGTERM, then valgrind checks the heap: seconds on a quiet host; the deadline only
# bounds a hang (the stop and the leak scan run under valgrind, which a loaded host stretches).
kill -TERM "$vg"
for _ in $(seq 1 1800); do kill -0 "$vg" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$vg" 2>/dev/null; then
    not_ok "the daemon stopped within 180 s of SIGTERM"; kill -KILL "$vg"; wait "$vg"; vg=
else
    wait "$vg"; rc=$?; vg=
    ok "the daemon stopped on SIGTERM"
    read -r e d i p <<<"$(report "$D/vg.log")"
    check "valgrind's report is complete (heap and error summaries)" '[ -n "${e:-}" ]'
    check "memcheck exit status 0 (got $rc)" '[ "$rc" = 0 ]'
    check "no memory error (ERROR SUMMARY: ${e:-?})" '[ "${e:-1}" = 0 ]'
    check "no block definitely (${d:-?}), indirectly (${i:-?}) or possibly (${p:-?}) lost" \
        '[ "${d:-1}" = 0 ] && [ "${i:-1}" = 0 ] && [ "${p:-1}" = 0 ]'
fi
if [ "$failed" != 0 ]; then sed 's/^/# /' "$D/vg.log" | grep -v "unhandled amd64-linux syscall\|README_MISSING\|Nevertheless we\|valgrind.org/support\|write your own handler" | tail -80; fi
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
