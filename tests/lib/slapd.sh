#!/usr/bin/env bash
# slapd.sh - a throwaway OpenLDAP slapd on loopback for the tests.
#
#   slapd.sh start DIR     make DIR, a PKI (mkpki.sh) in DIR/pki unless
#                          SLAPD_PKI names one, slapd.conf from
#                          tests/data/slapd.conf.in, load tests/data/corp.ldif
#                          with slapadd, start slapd on two free 127.0.0.1
#                          ports (ldap:// with StartTLS and ldaps://), wait
#                          until it answers, write DIR/slapd.env
#   slapd.sh stop DIR      kill it (TERM, then KILL after 5 s); data stays
#   slapd.sh restart DIR   stop, then start again on the same ports with the
#                          same data (no new slapadd)
#   slapd.sh env DIR       print DIR/slapd.env
#
# Environment:
#   SLAPD_TLS=0            an instance WITHOUT TLS (only ldap://, StartTLS is
#                          refused by the server); default 1
#   SLAPD_PORT, SLAPD_TLS_PORT   ports to use (default: random free ones)
#   SLAPD_LOGLEVEL         slapd loglevel (default "stats": connections and
#                          operations, one line each, in DIR/slapd.log)
#   SLAPD_OWNER_PID        when that process dies, a watchdog kills slapd,
#                          so a crashed test leaves no daemon behind
#   SLAPD_PKI              existing PKI directory (ca.pem, ldap.pem, ...)
#   SLAPD_CERT, SLAPD_KEY  server certificate and key (default: the PKI's
#                          ldap.pem, SAN localhost and 127.0.0.1)
#
# DIR/slapd.env is shell syntax (KEY=value, one a line), also read by
# tests/lib/tl_slapd.c: SLAPD_PID SLAPD_URI SLAPD_LDAPS_URI SLAPD_PORT
# SLAPD_TLS_PORT SLAPD_TLS SLAPD_BASE SLAPD_ROOTDN SLAPD_ROOTPW SLAPD_BINDDN
# SLAPD_BINDPW SLAPD_BINDPW_FILE SLAPD_CA SLAPD_PKI SLAPD_LOG.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
slapd=${SLAPD_BIN:-/usr/sbin/slapd}
slapadd=${SLAPADD_BIN:-/usr/sbin/slapadd}
moddir=${SLAPD_MODDIR:-/usr/lib/ldap}
schema=${SLAPD_SCHEMA:-/etc/ldap/schema}

die() { echo "slapd.sh: $*" >&2; exit 1; }

port_free() { # port
	! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

pick_port() { # excluded-port
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		[ "$p" != "${1:-}" ] || continue
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	die "no free port found"
}

# Waits (at most ~10 s) for slapd to answer a search on the plain port.
wait_up() { # dir
	local d=$1 i
	for i in $(seq 1 100); do
		if ! kill -0 "$(cat "$d/slapd.pid.run")" 2>/dev/null; then
			return 1
		fi
		if ldapsearch -x -H "ldap://127.0.0.1:$SLAPD_PORT" \
		    -D "cn=admin,dc=corp,dc=example" -w admin-secret \
		    -b dc=corp,dc=example -s base -o nettimeout=1 \
		    '(objectClass=*)' dn >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

write_conf() { # dir tls
	local d=$1 tls=$2 ll=${SLAPD_LOGLEVEL:-stats}
	sed -e "s|@DIR@|$d|g" -e "s|@PKI@|$pki|g" -e "s|@SCHEMA@|$schema|g" \
	    -e "s|@MODDIR@|$moddir|g" -e "s|@LOGLEVEL@|$ll|g" \
	    -e "s|@CERT@|${SLAPD_CERT:-$pki/ldap.pem}|g" \
	    -e "s|@KEY@|${SLAPD_KEY:-$pki/ldap-key.pem}|g" \
	    "$src/tests/data/slapd.conf.in" >"$d/slapd.conf.tmp"
	if [ "$tls" = 1 ]; then
		sed -i -e 's/^#TLS //' "$d/slapd.conf.tmp"
	else
		sed -i -e '/^#TLS /d' "$d/slapd.conf.tmp"
	fi
	mv "$d/slapd.conf.tmp" "$d/slapd.conf"
}

launch() { # dir: starts slapd with the ports from the environment
	local d=$1 urls
	urls="ldap://127.0.0.1:$SLAPD_PORT/"
	if [ "$SLAPD_TLS" = 1 ]; then
		urls="$urls ldaps://127.0.0.1:$SLAPD_TLS_PORT/"
	fi
	# -d keeps slapd in the foreground: $! is its pid, the log goes to
	# a file. setsid: not killed by the caller's terminal signals.
	setsid "$slapd" -f "$d/slapd.conf" -h "$urls" \
	    -d "${SLAPD_LOGLEVEL:-stats}" </dev/null >>"$d/slapd.log" 2>&1 &
	echo $! >"$d/slapd.pid.run"
	if ! wait_up "$d"; then
		kill -9 "$(cat "$d/slapd.pid.run")" 2>/dev/null || true
		return 1
	fi
	if [ -n "${SLAPD_OWNER_PID:-}" ]; then
		# The watchdog has its own session: Check kills a finished
		# test's whole process group, and a watchdog in that group
		# would die with it and leave slapd behind. kill -9 also ends
		# a slapd a test left stopped (SIGSTOP).
		# It checks slapd's command line each time, so a reused pid
		# is never killed.
		setsid bash -c 'mine() { grep -qF "$3" "/proc/$2/cmdline"; }
		    while kill -0 "$1" 2>/dev/null && mine "$@"; do sleep 1
		    done; mine "$@" && kill -9 "$2"' watchdog \
		    "$SLAPD_OWNER_PID" "$(cat "$d/slapd.pid.run")" \
		    "$d/slapd.conf" </dev/null >/dev/null 2>&1 &
	fi
	return 0
}

write_env() { # dir
	local d=$1
	cat >"$d/slapd.env" <<E
SLAPD_PID=$(cat "$d/slapd.pid.run")
SLAPD_URI=ldap://127.0.0.1:$SLAPD_PORT
SLAPD_LDAPS_URI=$([ "$SLAPD_TLS" = 1 ] && echo "ldaps://127.0.0.1:$SLAPD_TLS_PORT")
SLAPD_PORT=$SLAPD_PORT
SLAPD_TLS_PORT=$SLAPD_TLS_PORT
SLAPD_TLS=$SLAPD_TLS
SLAPD_BASE=dc=corp,dc=example
SLAPD_ROOTDN=cn=admin,dc=corp,dc=example
SLAPD_ROOTPW=admin-secret
SLAPD_BINDDN=cn=rabroker,ou=Services,dc=corp,dc=example
SLAPD_BINDPW=svc-secret
SLAPD_BINDPW_FILE=$d/bindpw
SLAPD_CA=$pki/ca.pem
SLAPD_PKI=$pki
SLAPD_LOG=$d/slapd.log
SLAPD_OWNER_PID=${SLAPD_OWNER_PID:-}
E
}

do_stop() { # dir
	local d=$1 pid i
	[ -f "$d/slapd.pid.run" ] || return 0
	pid=$(cat "$d/slapd.pid.run")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		kill -CONT "$pid" 2>/dev/null || true # if a test stopped it
		for i in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		for i in $(seq 1 20); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$d/slapd.pid.run"
}

do_start() { # dir
	local d=$1 try
	mkdir -p "$d"
	d=$(cd "$d" && pwd)
	do_stop "$d" # a slapd still running there would lose its database
	SLAPD_TLS=${SLAPD_TLS:-1}
	pki=${SLAPD_PKI:-$d/pki}
	[ -f "$pki/ca.pem" ] || bash "$here/mkpki.sh" "$pki" >/dev/null
	write_conf "$d" "$SLAPD_TLS"
	rm -rf "$d/db"
	mkdir -p "$d/db"
	"$slapadd" -q -f "$d/slapd.conf" -l "$src/tests/data/corp.ldif" \
	    >"$d/slapadd.log" 2>&1 || die "slapadd failed: $(cat "$d/slapadd.log")"
	printf '%s\n' svc-secret >"$d/bindpw"
	chmod 600 "$d/bindpw"
	: >"$d/slapd.log"
	for try in 1 2 3 4 5; do
		local fixed=${SLAPD_PORT:+1}
		SLAPD_PORT=${SLAPD_PORT:-$(pick_port)}
		SLAPD_TLS_PORT=${SLAPD_TLS_PORT:-$(pick_port "$SLAPD_PORT")}
		if launch "$d"; then
			write_env "$d"
			return 0
		fi
		[ -z "$fixed" ] || break
		unset SLAPD_PORT SLAPD_TLS_PORT
	done
	die "slapd did not start; log: $(tail -n 20 "$d/slapd.log")"
}

do_restart() { # dir
	local d
	d=$(cd "$1" && pwd)
	[ -f "$d/slapd.env" ] || die "$d/slapd.env: not started"
	# shellcheck disable=SC1091
	. "$d/slapd.env"
	pki=$SLAPD_PKI
	do_stop "$d"
	export SLAPD_OWNER_PID
	# The old sockets are closed; slapd sets SO_REUSEADDR, so the same
	# ports bind again at once. Retry briefly anyway.
	local try
	for try in 1 2 3 4 5 6 7 8 9 10; do
		if launch "$d"; then
			write_env "$d"
			return 0
		fi
		sleep 0.3
	done
	die "slapd did not restart; log: $(tail -n 20 "$d/slapd.log")"
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: slapd.sh start|stop|restart|env DIR"
case $cmd in
start) do_start "$dir" ;;
stop) do_stop "$dir" ;;
restart) do_restart "$dir" ;;
env) cat "$dir/slapd.env" ;;
*) die "unknown command $cmd" ;;
esac
