#!/usr/bin/env bash
# demo_quickstart.sh - the README's quickstart, as a test: deploy/demo.sh
# --non-interactive against the binaries ctest has just built (no package
# installation, no build): PKI, slapd, rabrokerd, x11vnc on Xvfb (or the
# demo's stand-in RFB server when they are not installed), raagent with a
# consent script that accepts, raoffer as CORP\alice; passes when the VNC
# greeting "RFB 003.008" is read through raoffer's viewer port and the
# audit trail has every step and verifies.
set -euo pipefail
src=${RABROKER_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bd=${RABROKER_BUILD_DIR:?RABROKER_BUILD_DIR is not set (run through ctest)}
exec bash "$src/deploy/demo.sh" --non-interactive --no-install --build-dir "$bd"
