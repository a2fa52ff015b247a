#!/usr/bin/env bash
# deploy/demo.sh - the quickstart: rabroker end to end on one machine.
#
#   deploy/demo.sh [--non-interactive] [--no-install] [--build-dir DIR] [--keep]
#
# On a fresh Debian 12 machine, as root (or with sudo):
#   1. installs the packages (deploy/install-deps.sh)       --no-install: skip
#   2. builds a Release tree in build/demo                   --build-dir DIR:
#                                                            use a tree built
#                                                            already, no build
#   3. makes a throwaway PKI (tests/lib/mkpki.sh) and starts a throwaway
#      OpenLDAP directory on loopback (tests/lib/slapd.sh, tests/data/corp.ldif:
#      domain CORP, helpers in nested groups, machines in two OUs)
#   4. writes a broker configuration and an offer policy, starts rabrokerd
#   5. starts a real VNC server (x11vnc on Xvfb) and raagent for the machine
#      ws-042.corp.example, with the consent prompt on THIS terminal
#   6. interactive (default): prints the raoffer command to run as the helper
#      CORP\alice in another terminal, answers the prompt here, and shows
#      where to watch the connection and the audit trail; Ctrl-C stops it
#      --non-interactive: runs the offer itself with scripted consent,
#      reads the VNC server's greeting ("RFB 003.008") through raoffer's
#      viewer port, verifies the audit trail, prints a summary, exits 0/1
# Everything lives in a temporary directory that is removed at the end
# (--keep leaves it); every process started here is stopped on exit.
# Network: loopback only.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
interactive=1
install=1
build_dir=
keep=0
MAX_MINUTES=${DEMO_MAX_MINUTES:-60} # the interactive demo stops by itself

usage() {
	sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-2}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--non-interactive) interactive=0 ;;
	--no-install) install=0 ;;
	--build-dir)
		[ $# -ge 2 ] || usage
		build_dir=$2
		shift
		;;
	--keep) keep=1 ;;
	-h | --help) usage 0 ;;
	*)
		echo "demo.sh: unknown option $1" >&2
		usage
		;;
	esac
	shift
done

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
fail() {
	printf '\ndemo.sh: FAILED: %s\n' "$*" >&2
	exit 1
}

# ---- cleanup: our children only, in reverse order ---------------------------
T=
pids=()
cleanup() {
	local rc=$? i pid
	trap - EXIT INT TERM
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[i]}
		kill -TERM "$pid" 2>/dev/null || true
	done
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[i]}
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "$T" ] && [ -d "$T/slapd" ]; then
		bash "$src/tests/lib/slapd.sh" stop "$T/slapd" >/dev/null 2>&1 || true
	fi
	if [ -n "$T" ] && [ -d "$T" ]; then
		if [ "$rc" -ne 0 ] && [ "$keep" = 0 ]; then
			for f in rabrokerd.log raagent.log raoffer.out; do
				[ -s "$T/$f" ] || continue
				echo "---- last lines of $f ----" >&2
				tail -n 15 "$T/$f" >&2
			done
		fi
		if [ "$keep" = 1 ]; then
			echo "kept $T (logs, audit trail, configuration)"
		else
			rm -rf "$T"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "stopping..."; exit 130' INT TERM

# ---- 1. packages, 2. build ----------------------------------------------------
if [ "$install" = 1 ]; then
	step "Installing packages (deploy/install-deps.sh)"
	if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
		fail "run as root (or install sudo), or pass --no-install"
	fi
	bash "$src/deploy/install-deps.sh"
fi
if [ -z "$build_dir" ]; then
	build_dir=$src/build/demo
	step "Building (Release) in $build_dir"
	cmake -S "$src" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
	    -DRABROKER_TESTS=OFF >/dev/null
	cmake --build "$build_dir" -j2 >/dev/null
fi
build_dir=$(cd "$build_dir" && pwd)
RABROKERD=$build_dir/broker/rabrokerd
RABROKERCTL=$build_dir/broker/rabrokerctl
RAAGENT=$build_dir/client/raagent
RAOFFER=$build_dir/client/raoffer
for b in "$RABROKERD" "$RABROKERCTL" "$RAAGENT" "$RAOFFER"; do
	[ -x "$b" ] || fail "$b is missing: build first (or drop --build-dir)"
done
for c in python3 certtool; do
	command -v "$c" >/dev/null || fail "$c is missing: run deploy/install-deps.sh"
done

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	fail "$what (after ${secs}s)"
}

port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$1"; }

T=$(mktemp -d /tmp/rabroker-demo.XXXXXX)
chmod 755 "$T"

# ---- 3. PKI and directory -----------------------------------------------------
step "Demo PKI and directory in $T"
bash "$src/tests/lib/mkpki.sh" "$T/pki" >/dev/null
info "CA, broker certificate (localhost), machine certificate ws-042.corp.example"
SLAPD_PKI=$T/pki SLAPD_OWNER_PID=$$ SLAPD_LOGLEVEL=none \
    bash "$src/tests/lib/slapd.sh" start "$T/slapd" >/dev/null
# shellcheck disable=SC1091
. "$T/slapd/slapd.env"
info "slapd on $SLAPD_URI (StartTLS), base $SLAPD_BASE"
info "domain CORP: CORP\\alice in helpdesk; CORP\\carol in tier1 -> tier2 ->"
info "helpdesk-all (nested); CORP\\dave denied; machines in"
info "ou=Workstations and ou=Servers"

# ---- 4. broker ----------------------------------------------------------------
step "Broker"
BPORT=$(free_port)
MPORT=$(free_port)
cp "$T/pki/broker-key.pem" "$T/broker-key.pem"
chmod 600 "$T/broker-key.pem"
cat >"$T/policy.conf" <<'EOF'
# Demo policy (docs/POLICY.md)
defaults max-ticket=30m prompt-timeout=60s nobody=decline
scope workstations ou="ou=Workstations,ou=Computers,dc=corp,dc=example"
scope servers      ou="ou=Servers,ou=Computers,dc=corp,dc=example" prompt-timeout=30s
allow control group "CORP\helpdesk"     on workstations
allow view    group "CORP\helpdesk-all" on workstations
deny          user  "CORP\dave"         on all
EOF
cat >"$T/rabrokerd.conf" <<EOF
; demo configuration written by deploy/demo.sh
[broker]
listen = 127.0.0.1:$BPORT
cert = $T/pki/broker.pem
key = $T/broker-key.pem
ca = $T/pki/ca.pem
[directory]
uri = $SLAPD_URI
starttls = yes
ca = $SLAPD_CA
bind_dn = $SLAPD_BINDDN
bind_pw_file = $SLAPD_BINDPW_FILE
default_domain = CORP
require_computer_object = yes
[domain CORP]
realm = corp.example
base_dn = $SLAPD_BASE
[policy]
file = $T/policy.conf
[tickets]
path = $T/tickets.db
[audit]
path = $T/audit.log
syslog = no
[log]
syslog = no
[metrics]
listen = 127.0.0.1:$MPORT
[control]
socket = $T/control.sock
EOF
"$RABROKERD" -n -f "$T/rabrokerd.conf" >/dev/null ||
    fail "rabrokerd -n refused the demo configuration"
"$RABROKERD" -d -f "$T/rabrokerd.conf" 2>"$T/rabrokerd.log" &
pids+=($!)
wait_for 15 "rabrokerd did not start (see $T/rabrokerd.log)" \
    grep -q "ready on" "$T/rabrokerd.log"
info "rabrokerd on 127.0.0.1:$BPORT, metrics http://127.0.0.1:$MPORT/metrics"

# ---- 5. VNC server and agent ----------------------------------------------------
step "Screen and agent for ws-042.corp.example"
VNCPORT=$(free_port)
vnc_kind=
if command -v Xvfb >/dev/null && command -v x11vnc >/dev/null; then
	disp=
	for n in $(seq 42 99); do
		if [ ! -e "/tmp/.X11-unix/X$n" ] && [ ! -e "/tmp/.X$n-lock" ]; then
			disp=$n
			break
		fi
	done
	[ -n "$disp" ] || fail "no free X display between :42 and :99"
	Xvfb ":$disp" -screen 0 1024x768x24 -nolisten tcp >"$T/xvfb.log" 2>&1 &
	pids+=($!)
	wait_for 10 "Xvfb :$disp did not start" test -e "/tmp/.X11-unix/X$disp"
	x11vnc -display ":$disp" -rfbport "$VNCPORT" -localhost -forever \
	    -shared -nopw -norc -quiet >"$T/x11vnc.log" 2>&1 &
	pids+=($!)
	vnc_kind="x11vnc on Xvfb :$disp"
else
	# Without x11vnc: a stand-in that speaks only the RFB greeting.
	python3 - "$VNCPORT" >"$T/fakevnc.log" 2>&1 <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
def serve(c):
    c.sendall(b"RFB 003.008\n")
    try:
        while c.recv(4096): pass
    finally:
        c.close()
for _ in range(100):
    c, _a = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
	pids+=($!)
	vnc_kind="a stand-in RFB server (install x11vnc and xvfb for a real screen)"
fi
wait_for 15 "the VNC server did not listen on 127.0.0.1:$VNCPORT" port_open "$VNCPORT"
info "VNC: $vnc_kind, 127.0.0.1:$VNCPORT"

mkdir -p "$T/agent" "$T/prompt"
chmod 700 "$T/agent"
if [ "$interactive" = 1 ]; then
	# The agent runs this for each question; demo.sh's loop below asks
	# on this terminal and writes the answer back.
	cat >"$T/prompt.sh" <<EOF
#!/bin/sh
q="$T/prompt/\$RA_TICKET.\$RA_KIND"
printf '%s\n' "\$RA_KIND" "\$RA_HELPER" "\$RA_MODE" "\$RA_TIMEOUT" >"\$q.tmp"
mv "\$q.tmp" "\$q.q"
i=0
while [ \$i -lt \$((\${RA_TIMEOUT:-60} * 5)) ] && [ ! -f "\$q.a" ]; do
	sleep 0.2
	i=\$((i + 1))
done
a=\$(cat "\$q.a" 2>/dev/null)
rm -f "\$q.q" "\$q.a"
[ "\$a" = yes ]
EOF
else
	cat >"$T/prompt.sh" <<EOF
#!/bin/sh
# Scripted consent for --non-interactive: accept, and say so.
printf '%s %s from %s (%s) for %s: accepted by the script\n' \
    "\$(date -u +%FT%TZ)" "\$RA_KIND" "\$RA_HELPER" "\$RA_MODE" "\$RA_USER" >>"$T/prompts.log"
exit 0
EOF
fi
chmod 755 "$T/prompt.sh"
cat >"$T/raagent.conf" <<EOF
; demo agent configuration written by deploy/demo.sh (docs/AGENT.md)
[agent]
broker = 127.0.0.1:$BPORT
server_name = localhost
ca = $T/pki/ca.pem
cert = $T/pki/ws-042.pem
key = $T/pki/ws-042-key.pem
state_dir = $T/agent
[sessions]
; the demo has no desktop login: one static graphical session
source = static
session = CORP\\bob graphical
[prompt]
command = script:$T/prompt.sh
[tunnel]
target = 127.0.0.1:$VNCPORT
relay = yes
[log]
level = info
EOF
"$RAAGENT" -d -f "$T/raagent.conf" >"$T/raagent.log" 2>&1 &
pids+=($!)
wait_for 20 "raagent did not come online (see $T/raagent.log)" \
    grep -q '"event":"agent_online"' "$T/audit.log"
info "raagent online: ws-042.corp.example, user CORP\\bob (static session)"

# The helper's settings: CORP\alice, password in a 0600 file.
printf '%s\n' alice-pw >"$T/alice.pw"
chmod 600 "$T/alice.pw"
VIEWPORT=$(free_port)
cat >"$T/raoffer.conf" <<EOF
; demo helper configuration written by deploy/demo.sh (docs/HELPER.md)
[broker]
address = 127.0.0.1:$BPORT
server_name = localhost
ca = $T/pki/ca.pem
[auth]
user = CORP\\alice
password_file = $T/alice.pw
[listen]
; the agent connects back to this address (one machine: loopback)
addresses = 127.0.0.1
[viewer]
port = $VIEWPORT
[offer]
timeout = 120s
EOF

# ---- 6a. non-interactive: the whole offer, checked ----------------------------
if [ "$interactive" = 0 ]; then
	step "Offer: CORP\\alice -> ws-042.corp.example (scripted consent)"
	"$RAOFFER" -c "$T/raoffer.conf" ws-042.corp.example >"$T/raoffer.out" 2>&1 &
	offer_pid=$!
	pids+=("$offer_pid")
	wait_for 60 "raoffer did not get a session (see $T/raoffer.out)" \
	    grep -q "viewer: connect to 127.0.0.1:$VIEWPORT" "$T/raoffer.out"
	sed 's/^/    raoffer: /' "$T/raoffer.out"
	banner=$(python3 - "$VIEWPORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
s.settimeout(15)
d = b""
while len(d) < 12:
    c = s.recv(12 - len(d))
    if not c:
        break
    d += c
s.close()
sys.stdout.write(d.decode("ascii", "replace"))
PY
) || true
	[ "$banner" = "RFB 003.008" ] ||
	    fail "expected the VNC greeting \"RFB 003.008\" through the tunnel, got \"$banner\""
	info "read \"RFB 003.008\" from the VNC server through raoffer's viewer port"
	# The viewer closed: raoffer ends the session and exits 0.
	offer_rc=124
	for _ in $(seq 1 100); do
		if ! kill -0 "$offer_pid" 2>/dev/null; then
			offer_rc=0
			wait "$offer_pid" || offer_rc=$?
			break
		fi
		sleep 0.2
	done
	[ "$offer_rc" = 0 ] || fail "raoffer exited with $offer_rc (see $T/raoffer.out)"
	wait_for 15 "no session_disconnected in the audit trail" \
	    grep -q '"event":"session_disconnected"' "$T/audit.log"

	step "Audit trail $T/audit.log"
	missing=
	for ev in agent_online auth_succeeded policy_decision ticket_created \
	    session_accepted session_connected session_disconnected; do
		n=$(grep -c "\"event\":\"$ev\"" "$T/audit.log" || true)
		info "$(printf '%-22s %s' "$ev" "$n")"
		[ "$n" -ge 1 ] || missing="$missing $ev"
	done
	[ -z "$missing" ] || fail "events missing from the audit trail:$missing"
	verify=$("$RABROKERCTL" verify-audit "$T/audit.log") ||
	    fail "rabrokerctl verify-audit: $verify"
	info "rabrokerctl verify-audit: $verify"
	if grep -q "alice-pw" "$T/audit.log" "$T/rabrokerd.log"; then
		fail "the helper's password is in the audit trail or the log"
	fi

	step "Operator's view"
	"$RABROKERCTL" -s "$T/control.sock" agents | sed 's/^/    /'
	health=$(python3 -c 'import sys,urllib.request as u; print(u.urlopen("http://127.0.0.1:%s/health" % sys.argv[1], timeout=5).read().decode().strip())' "$MPORT") ||
	    fail "/health did not answer 200"
	info "/health: $health"
	accepted=$(python3 -c 'import sys,urllib.request as u; print([l for l in u.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode().splitlines() if l.startswith("rabroker_offers_total{outcome=\"accepted\"}")][0])' "$MPORT")
	info "/metrics: $accepted"

	step "Summary"
	info "offer CORP\\alice -> ws-042.corp.example: accepted (scripted), connected"
	info "VNC greeting read through the tunnel: RFB 003.008 ($vnc_kind)"
	info "audit trail: $verify"
	echo
	echo "demo: OK"
	exit 0
fi

# ---- 6b. interactive ------------------------------------------------------------
tty_dev=/dev/tty
[ -r "$tty_dev" ] || fail "no terminal: use --non-interactive"
step "Ready. You are the helper CORP\\alice; this terminal is the user CORP\\bob."
cat <<EOF

  In ANOTHER terminal, as the helper, offer assistance to ws-042:

    $RAOFFER -c $T/raoffer.conf ws-042.corp.example

  (add --control to ask for a ticket that may take control; the settings,
  user CORP\\alice and her password file, are in $T/raoffer.conf)

  The consent question appears HERE: answer y to let alice see the screen.
  Then point a VNC viewer at the port raoffer prints, e.g.

    xtightvncviewer 127.0.0.1::$VIEWPORT      (or any VNC viewer)

  Watch:
    the audit trail   tail -f $T/audit.log
    verify it         $RABROKERCTL verify-audit $T/audit.log
    the broker        $RABROKERCTL -s $T/control.sock status | agents | tickets
    metrics, health   curl -s http://127.0.0.1:$MPORT/metrics  |  /health
    logs              $T/rabrokerd.log $T/raagent.log

  Stop the demo with Ctrl-C (it also stops by itself after $MAX_MINUTES minutes).
EOF
end=$((SECONDS + MAX_MINUTES * 60))
while [ "$SECONDS" -lt "$end" ]; do
	for q in "$T"/prompt/*.q; do
		[ -e "$q" ] || continue
		{ read -r kind; read -r helper; read -r mode; read -r tmo; } <"$q"
		if [ "$kind" = control ]; then
			what="take CONTROL of your screen"
		else
			what="see your screen ($mode ticket)"
		fi
		printf '\n\a\033[1m[ws-042 consent] %s asks to %s. Allow? [y/N] (%ss)\033[0m ' \
		    "$helper" "$what" "$tmo"
		ans=
		read -r -t "$tmo" ans <"$tty_dev" || true
		case $ans in
		y | Y | yes) echo yes >"${q%.q}.a"; info "accepted" ;;
		*) echo no >"${q%.q}.a"; info "declined" ;;
		esac
	done
	sleep 0.3
done
echo "demo: $MAX_MINUTES minutes passed, stopping"
