#!/usr/bin/env bash
# ops_logrotate.sh - the shipped logrotate rule (deploy/logrotate/rabroker)
# against a real rabrokerd: the rule is run by the real logrotate with only
# its path, owner and reload command pointed at this test's broker; after
# the rotation the broker (SIGHUP) writes into a new file that starts with
# audit_continued, and `rabrokerctl verify-audit OLD NEW` verifies the chain
# across both files. Without logrotate installed it prints SKIP and passes.
set -euo pipefail
src=${RABROKER_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bd=${RABROKER_BUILD_DIR:?RABROKER_BUILD_DIR is not set (run through ctest)}
if ! command -v logrotate >/dev/null; then
	echo "SKIP: logrotate is not installed (deploy/install-deps.sh)"
	exit 0
fi
T=$(mktemp -d /tmp/ops_logrotate.XXXXXX)
pid=
cleanup() {
	[ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
	rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$T"/rabrokerd.log "$T"/lr.log; do [ -f "$f" ] && tail -n 20 "$f" >&2; done; exit 1; }

bash "$src/tests/lib/mkpki.sh" "$T/pki" >/dev/null
cp "$T/pki/broker-key.pem" "$T/key.pem"
chmod 600 "$T/key.pem"
: >"$T/policy.conf"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$T/log"
cat >"$T/rabrokerd.conf" <<C
[broker]
listen = 127.0.0.1:$port
cert = $T/pki/broker.pem
key = $T/key.pem
ca = $T/pki/ca.pem
[policy]
file = $T/policy.conf
[tickets]
path = $T/tickets.db
[audit]
path = $T/log/audit.log
syslog = no
[log]
syslog = no
[metrics]
listen =
[control]
socket = $T/control.sock
C
"$bd/broker/rabrokerd" -d -f "$T/rabrokerd.conf" 2>"$T/rabrokerd.log" &
pid=$!
for _ in $(seq 1 75); do grep -q "ready on" "$T/rabrokerd.log" && break; sleep 0.2; done
grep -q "ready on" "$T/rabrokerd.log" || fail "rabrokerd did not start"
# A second event before rotating: a policy reload.
kill -HUP "$pid"
for _ in $(seq 1 50); do grep -q policy_reloaded "$T/log/audit.log" && break; sleep 0.1; done
lines_before=$(wc -l <"$T/log/audit.log")

# The shipped rule, pointed at this broker: path, owner, reload command.
me=$(id -un)
grp=$(id -gn)
sed -e "s|/var/log/rabroker/audit.log|$T/log/audit.log|" \
    -e "s|create 0600 rabroker rabroker|create 0600 $me $grp|" \
    -e "/if \[ -d \/run\/systemd\/system \]; then/,/fi/c\\		kill -HUP $pid" \
    "$src/deploy/logrotate/rabroker" >"$T/logrotate.conf"
grep -q "kill -HUP $pid" "$T/logrotate.conf" || fail "could not adapt the rule"
logrotate -f -s "$T/lr.state" "$T/logrotate.conf" >"$T/lr.log" 2>&1 ||
    fail "logrotate failed: $(cat "$T/lr.log")"
old=$(ls "$T"/log/audit.log.* 2>/dev/null | head -n 1)
[ -n "$old" ] || fail "no rotated file in $T/log: $(ls "$T/log")"
# The reload line written at SIGHUP still goes to the old file, before
# the reopen: the old file only grows.
[ "$(wc -l <"$old")" -ge "$lines_before" ] || fail "rotated file lost lines"
[ "$(stat -c %a "$T/log/audit.log")" = 600 ] || fail "new file is not 0600"
# After SIGHUP the broker continues the chain in the new file.
for _ in $(seq 1 50); do grep -q audit_continued "$T/log/audit.log" 2>/dev/null && break; sleep 0.1; done
head -n 1 "$T/log/audit.log" | grep -q '"event":"audit_continued"' ||
    fail "the new file does not start with audit_continued: $(head -n 2 "$T/log/audit.log")"
kill -TERM "$pid"
wait "$pid" || true
pid=
"$bd/broker/rabrokerctl" verify-audit "$old" "$T/log/audit.log" ||
    fail "the chain does not verify across the rotation"
# Out of order, the chain does not verify.
"$bd/broker/rabrokerctl" verify-audit "$T/log/audit.log" "$old" >/dev/null &&
    fail "files in the wrong order verified"
echo "ok: rotated with the shipped logrotate rule, chain verified across files"
