#!/usr/bin/env bash
# audit_verify.sh - the real `rabrokerctl verify-audit` on real trails:
# a trail written by bk_audit (bench_audit --gen) and one written by this
# script with sha256sum alone (an independent implementation of the format in
# docs/AUDIT.md). Each tampering (edit with sed, deletion, reordering,
# truncation mid-line) must exit 1 and name the right line.
set -euo pipefail

build=${RABROKER_BUILD_DIR:?RABROKER_BUILD_DIR not set}
ctl=$build/broker/rabrokerctl
gen=$build/tests/bench_audit
for b in "$ctl" "$gen"; do
	[ -x "$b" ] || { echo "FAIL: $b not built"; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/audit_verify.XXXXXX")
trap 'rm -rf "$work"' EXIT
fails=0

# expect RC PATTERN FILE...: runs verify-audit, checks exit code and output.
expect() {
	local want_rc=$1 pat=$2 out rc
	shift 2
	set +e
	out=$("$ctl" verify-audit "$@" 2>&1)
	rc=$?
	set -e
	if [ "$rc" -ne "$want_rc" ] || ! grep -qF -- "$pat" <<<"$out"; then
		echo "FAIL: verify-audit $*: rc $rc (want $want_rc), output:"
		echo "  $out"
		echo "  expected to contain: $pat"
		fails=$((fails + 1))
	else
		echo "ok: rc $rc: $out"
	fi
}

# A clean trail from the real writer.
t=$work/audit.log
"$gen" --gen "$t" 40
expect 0 "ok: 40 lines" "$t"
orig=$work/orig.log
cp "$t" "$orig"

# Backdate line 17 with sed (still valid JSON and time): the chain breaks
# at line 18.
sed -i '17s/"time":"[0-9]\{4\}/"time":"1999/' "$t"
if cmp -s "$t" "$orig"; then
	echo "FAIL: sed did not change line 17"
	fails=$((fails + 1))
fi
expect 1 "line 18: prev hash does not match line 17" "$t"

# Change the seq of line 9 (valid JSON, broken sequence).
cp "$orig" "$t"
sed -i '9s/^{"seq":9,/{"seq":90,/' "$t"
expect 1 "line 9: seq 90 expected 9" "$t"

# Delete line 5.
cp "$orig" "$t"
sed -i '5d' "$t"
expect 1 "line 5: seq 6 expected 5" "$t"

# Swap lines 11 and 12.
cp "$orig" "$t"
sed -i '11{h;d};12G' "$t"
expect 1 "line 11: seq 12 expected 11" "$t"

# Truncate in the middle of the last line.
cp "$orig" "$t"
truncate -s -25 "$t"
expect 1 "line 40: truncated" "$t"

# Not JSON.
cp "$orig" "$t"
sed -i '3s/^{/[/' "$t"
expect 1 "line 3: not JSON" "$t"

# The writer refuses to continue a torn trail, and says so.
cp "$orig" "$t"
truncate -s -5 "$t"
if "$gen" --gen "$t" 1 2>"$work/err"; then
	echo "FAIL: writer continued a torn trail"
	fails=$((fails + 1))
elif ! grep -q "torn" "$work/err"; then
	echo "FAIL: writer error does not say torn: $(cat "$work/err")"
	fails=$((fails + 1))
else
	echo "ok: writer refuses: $(cat "$work/err")"
fi

# Resuming an existing trail keeps the chain.
cp "$orig" "$t"
"$gen" --gen "$t" 10
expect 0 "ok: 50 lines" "$t"

# Rotation: the moved file and the new one verify alone and together (in
# order), and not in the wrong order.
r=$work/rot.log
"$gen" --gen-rotated "$r" 10
expect 0 "ok: 10 lines" "$r.1"
expect 0 "ok: 11 lines (last seq 21," "$r"
expect 0 "ok: 21 lines (last seq 21," "$r.1" "$r"
expect 1 "rot.log.1: line 1: seq 1 expected 22" "$r" "$r.1"
head -n 1 "$r" | grep -q '"event":"audit_continued"' || {
	echo "FAIL: rotated file does not start with audit_continued"
	fails=$((fails + 1))
}
# Three generations; a missing middle file is reported where the chain
# resumes.
mv "$r.1" "$r.2"
"$gen" --gen-rotated "$r" 5 # rot.log.1: seq 11..26, rot.log: 27..32
expect 0 "ok: 32 lines (last seq 32," "$r.2" "$r.1" "$r"
expect 1 "rot.log: line 1: seq 27 expected 11" "$r.2" "$r"

# An independent writer: the format and chain as documented.
s=$work/shell.log
: >"$s"
prev=$(printf '0%.0s' $(seq 64))
for i in $(seq 1 12); do
	line=$(printf '{"seq":%d,"time":"2026-11-22T03:04:%02d.123Z","event":"ticket_expired","ticket":"%032x","prev":"%s"}' \
		"$i" "$i" "$i" "$prev")
	printf '%s\n' "$line" >>"$s"
	prev=$(printf '%s' "$line" | sha256sum | cut -c1-64)
done
expect 0 "ok: 12 lines (last seq 12, last hash $prev)" "$s"

# Unreadable file: exit 2.
expect 2 "No such file" "$work/missing.log"

if [ "$fails" -ne 0 ]; then
	echo "audit_verify: $fails failure(s)"
	exit 1
fi
echo "audit_verify: all checks passed"
