#!/bin/sh
# Writes clearing(1) to stdout: the fixed sections below, and one section per subcommand made
# from that subcommand's own --help, so the page says what the binary it ships with does.
# Usage: debian/manpage.sh BUILT-CLEARING DATE VERSION
set -eu
bin=$1 date=$2 version=$3

# Help text as roff no-fill lines: backslashes escaped, a leading . or ' neutralised, - as \-.
roff() { sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }

cat <<HEAD
.TH CLEARING 1 "$date" "clearing $version" "User Commands"
.SH NAME
clearing \- run untrusted, machine\-generated code in gVisor sandboxes
.SH SYNOPSIS
.B clearing
.RI [ "global options" ]
.I command
.RI [ options ]
.SH DESCRIPTION
.B clearing
runs commands in isolated Docker containers under gVisor (runsc): no network, a
read\-only root, no capabilities, limits on memory, CPU, processes, time and
workspace size, and typed results that the command cannot forge.
.B clearing run
works alone, through the Docker engine; the other sandbox commands talk to the
daemon,
.BR "clearing serve" ,
through its unix socket.
The Debian package runs the daemon as the systemd unit
.B clearing.service
with
.I /etc/clearing/config.json
and lets members of the group
.B clearing
use its socket.
.SH GLOBAL OPTIONS
.nf
HEAD
"$bin" --help | sed -n '/^Global options:/,/^$/p' | sed '1d;$d' | roff
cat <<'MID'
.fi
.SH COMMANDS
Each command's options, as
.B clearing
.I command
.B \-\-help
prints them.
MID
"$bin" --help | sed -n '/^Commands:/,/^$/p' | sed '1d;$d' | awk '{print $1}' |
    while read -r cmd; do
        printf '.SS %s\n.nf\n' "$cmd"
        "$bin" "$cmd" --help | roff
        printf '.fi\n'
    done
cat <<'TAIL'
.SH EXIT STATUS
.BR run ,
.B exec
and
.B logs \-f
exit with the command's own status (128+N when it died of signal N), 124 when it
timed out, 123 when it ran out of memory, 126 when it could not start, 122 when
the sandbox failed and 125 when clearing could not run it. Other commands exit 0
on success, 1 when the request was refused or a check failed, 2 for bad options
and 125 when clearing could not do it.
.SH ENVIRONMENT
.TP
.B CLEARING_HOST
the daemon's socket (unix:///path), as \-\-host
.TP
.BR CLEARING_DOCKER_HOST ", " DOCKER_HOST
the Docker engine's socket
.TP
.B CLEARING_STATE_DIR
where workspaces, the database and the audit log live
.TP
.B CLEARING_AUDIT_LOG
the audit log
.TP
.B CLEARING_LOG_LEVEL
debug, info, warn or error
.TP
.B CLEARING_AGENT
the in\-sandbox agent to use instead of the installed one
.SH FILES
.TP
.I /etc/clearing/config.json
the daemon's configuration: every setting with its default
.TP
.I /run/clearing/clearing.sock
the daemon's socket (group clearing, mode 0660)
.TP
.I /var/lib/clearing
state: the database, workspaces, the audit log (audit.log, rotated to
audit.log.000001, ... by the daemon itself at audit_rotate_bytes; audit_keep
bounds how many are kept: no logrotate), the audit key and the verdict key
.TP
.I /usr/libexec/clearing/clearing\-agent
the agent that runs inside each sandbox
.SH SEE ALSO
.BR docker (1),
.BR runsc (8),
.BR systemctl (1);
/usr/share/doc/clearing and docs/OPERATIONS.md in the source.
TAIL
