#!/usr/bin/env bash
# Installs every Debian 12 package rabroker needs to build, test and run the
# demo. Idempotent; run as root (or through sudo). Nothing is downloaded
# except through apt.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi

export DEBIAN_FRONTEND=noninteractive
# slapd: install the binaries only. The tests and the demo start their own
# slapd on loopback with a generated configuration; no system database.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections

PKGS=(
    build-essential cmake pkg-config git ca-certificates
    clang clang-format libclang-rt-14-dev
    libevent-dev libgnutls28-dev gnutls-bin
    libldap2-dev libsasl2-dev libsasl2-modules libsasl2-modules-ldap
    libjansson-dev libsqlite3-dev sqlite3 libinih-dev libsystemd-dev
    check
    slapd ldap-utils
    python3
    # the quickstart (deploy/demo.sh) and operations: a real VNC server on a
    # virtual display, curl for /metrics and /health, logrotate, the .deb
    xvfb x11vnc curl logrotate dpkg-dev fakeroot
    # the graphical consent prompt's test: the real zenity on Xvfb, keys by xdotool
    zenity xdotool
    # the package test boots a throwaway systemd container (systemd-nspawn)
    systemd systemd-container
)

apt-get update
apt-get install -y --no-install-recommends "${PKGS[@]}"
