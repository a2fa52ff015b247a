#!/bin/bash
# package-inside.sh - runs inside the systemd container that
# tests/integ/package.sh boots (as root, systemd is PID 1, own loopback).
# Does what docs/OPERATIONS.md "Package" tells an operator to do and writes
# one PASS or FAIL line per check to /t/result, then DONE. /t holds the
# package, a test PKI (mkpki.sh) and this script.
set -u
R=/t/result
: >"$R"
step() { echo "== $(date +%T) $*"; }
check() { # description command...
	local d=$1
	shift
	if "$@"; then echo "PASS $d" >>"$R"; else echo "FAIL $d" >>"$R"; fi
}
# Waits up to $1 tenths of a second for a command to succeed.
wait_for() {
	local n=$1 i
	shift
	for ((i = 0; i < n; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
finish() {
	journalctl --no-pager -u rabrokerd -u raagent >/t/journal.txt 2>&1
	echo DONE >>"$R"
	systemctl poweroff --no-block
	exit 0
}

step "dpkg -i"
check "dpkg -i installs the package" dpkg -i /t/rabroker.deb
dpkg -s rabroker >/dev/null 2>&1 || finish
check "postinst made the system user rabroker" getent passwd rabroker
check "/etc/rabroker is 0750 root:rabroker" \
	test "$(stat -c %a:%U:%G /etc/rabroker)" = 750:root:rabroker
check "/var/lib/rabroker is 0700 rabroker" \
	test "$(stat -c %a:%U /var/lib/rabroker)" = 700:rabroker
check "/var/log/rabroker is 0750 rabroker" \
	test "$(stat -c %a:%U /var/log/rabroker)" = 750:rabroker
check "rabrokerd.service is enabled" systemctl -q is-enabled rabrokerd.service
check "raagent.service is enabled" systemctl -q is-enabled raagent.service
check "both units pass systemd-analyze verify" \
	systemd-analyze verify rabrokerd.service raagent.service
# Not configured yet: starting is a no-op with the condition named.
systemctl start rabrokerd.service
check "unconfigured rabrokerd is skipped, not failed" \
	test "$(systemctl show -P ConditionResult rabrokerd.service)" = no
check "unconfigured rabrokerd is not failed" \
	test "$(systemctl is-failed rabrokerd.service)" != failed

step "configure the broker from the shipped example"
install -o rabroker -g rabroker -m 0600 /t/pki/broker-key.pem /etc/rabroker/
install -o root -g rabroker -m 0640 /t/pki/broker.pem /t/pki/ca.pem /etc/rabroker/
# The example with its directory sections left out (no directory in here)
# and the listener on this container's loopback.
awk '/^\[/ { skip = ($0 ~ /^\[(directory|domain )/) } !skip' \
	/etc/rabroker/rabrokerd.conf >/tmp/conf &&
	sed -i 's/^listen = 0.0.0.0:4433$/listen = 127.0.0.1:4433/' /tmp/conf &&
	cat /tmp/conf >/etc/rabroker/rabrokerd.conf
check "rabrokerd -n accepts the configured example" \
	rabrokerd -n -f /etc/rabroker/rabrokerd.conf
check "rabrokerctl check-config accepts it" rabrokerctl check-config

step "systemctl start rabrokerd"
# Type=notify: start returns once the broker sent READY=1.
check "systemctl start rabrokerd" systemctl start rabrokerd.service
check "rabrokerd is active" systemctl -q is-active rabrokerd.service
check "rabrokerd runs as rabroker" \
	test "$(ps -o user= -p "$(systemctl show -P MainPID rabrokerd.service)")" = rabroker
check "rabrokerctl status answers on /run/rabroker/control.sock" \
	wait_for 50 rabrokerctl status
systemd-analyze security --no-pager rabrokerd.service 2>/dev/null |
	tail -n 1 | sed 's/^/   /'

step "configure raagent from the shipped example"
install -m 0600 /t/pki/ws-042-key.pem /etc/rabroker/machine-key.pem
install -m 0644 /t/pki/ws-042.pem /etc/rabroker/machine.pem
sed -e 's/^broker = .*/broker = 127.0.0.1:4433/' \
	/usr/share/doc/rabroker/examples/raagent.conf >/etc/rabroker/raagent.conf
check "raagent -n accepts the configured example" \
	raagent -n -f /etc/rabroker/raagent.conf
check "systemctl start raagent" systemctl start raagent.service
agent_online() { rabrokerctl agents 2>/dev/null | grep -q ws-042.corp.example; }
check "the agent is online at the broker (rabrokerctl agents)" wait_for 200 agent_online

step "a user logs on (logind)"
# A PAM session through pam_systemd: logind registers it, raagent (the
# example's [sessions] source = logind) follows it and tells the broker.
# Without a terminal logind would make it a "background" session, which
# raagent rightly ignores (nobody to ask): the class and type of a console
# login are given as pam_systemd reads them.
useradd --create-home novice
systemd-run --quiet --unit=novice-login -p PAMName=login -p User=novice \
	-E XDG_SESSION_CLASS=user -E XDG_SESSION_TYPE=tty /bin/sleep 300
in_logind() { loginctl list-sessions --no-legend | grep -q novice; }
check "logind has novice's session" wait_for 100 in_logind
novice_seen() { rabrokerctl agents 2>/dev/null | grep -q 'novice (console)'; }
check "raagent reported novice's logind session to the broker" wait_for 200 novice_seen
systemctl stop novice-login
novice_gone() { ! rabrokerctl agents 2>/dev/null | grep -q novice; }
check "raagent reported the logout" wait_for 200 novice_gone
rabrokerctl agents | sed 's/^/   /'

step "systemctl reload rabrokerd"
check "systemctl reload rabrokerd" systemctl reload rabrokerd.service
reloaded() { grep -q policy_reloaded /var/log/rabroker/audit.log; }
check "reload wrote policy_reloaded" wait_for 50 reloaded
check "rabrokerd still active after reload" systemctl -q is-active rabrokerd.service

step "stop"
check "systemctl stop raagent" systemctl stop raagent.service
check "systemctl stop rabrokerd" systemctl stop rabrokerd.service
check "rabrokerd stopped cleanly (Result=success)" \
	test "$(systemctl show -P Result rabrokerd.service)" = success
check "the audit trail verifies" rabrokerctl verify-audit /var/log/rabroker/audit.log
check "the audit trail has agent_online" grep -q agent_online /var/log/rabroker/audit.log

step "dpkg -r"
systemctl start rabrokerd.service
check "dpkg -r removes the package" dpkg -r rabroker
check "rabrokerd is stopped after dpkg -r" \
	test "$(systemctl is-active rabrokerd.service)" != active
check "the programs are gone" test ! -e /usr/sbin/rabrokerd
check "the audit trail stays" test -s /var/log/rabroker/audit.log
finish
