#!/usr/bin/env bash
# protocol_examples.sh [PROTOCOL.md] - the example exchanges of
# docs/PROTOCOL.md are well-formed JSON-RPC 2.0 and name real methods.
#
# Every line of an indented (4+ spaces) or fenced code block that contains
# "-->" or "<--" is an example message: the JSON object after the arrow
# (and after "sender --> receiver" labels in the flows) must be one line of
# valid JSON and a valid rabroker message (PROTOCOL.md "Messages"):
# "jsonrpc":"2.0", only the six top-level members, a request/notification
# with a method name of 1-64 printable ASCII characters not starting with
# "rpc.", params an object or array, a response with exactly one of
# result/error, an error with an integer code, a string message and a
# data.reason, ids integers or strings of at most 128 bytes (null only in
# errors). Method names must be in the method tables of the code
# (broker/bk_methods.c, client/cl_agent.c, client/cl_offer.c), and every
# method of those tables must have an example request. A line meant to be
# malformed ends with "(malformed on purpose)" and is skipped.
# Exit 0 when all is well, 1 with one line per problem otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
doc=${1:-$src/docs/PROTOCOL.md}

exec python3 - "$doc" "$src" <<'PY'
import json, re, sys

doc, src = sys.argv[1], sys.argv[2]

def table_methods(path):
    text = open(path, encoding="utf-8").read()
    return set(re.findall(r'\.name\s*=\s*"([^"]+)"', text))

broker = table_methods(src + "/broker/bk_methods.c")
agent = table_methods(src + "/client/cl_agent.c")
helper = table_methods(src + "/client/cl_offer.c")
known = broker | agent | helper
if not broker or not agent or not helper:
    print("protocol_examples: no method table found under " + src)
    sys.exit(1)

problems, seen, count = [], set(), 0
in_fence = False
TOP = {"jsonrpc", "id", "method", "params", "result", "error"}

def check(no, msg):
    def bad(why):
        problems.append("%s:%d: %s" % (doc, no, why))
    if not isinstance(msg, dict):
        return bad("not a JSON object (batches are not supported)")
    if msg.get("jsonrpc") != "2.0":
        return bad('"jsonrpc" is not "2.0"')
    extra = set(msg) - TOP
    if extra:
        return bad("unknown top-level member(s) %s" % sorted(extra))
    has_id = "id" in msg
    if has_id:
        i = msg["id"]
        if isinstance(i, bool) or not (
                isinstance(i, int) or isinstance(i, str) or i is None):
            return bad("id is neither an integer nor a string")
        if isinstance(i, str) and len(i.encode()) > 128:
            return bad("id string longer than 128 bytes")
    if "method" in msg:
        m = msg["method"]
        if "result" in msg or "error" in msg:
            return bad("a request with result or error")
        if not isinstance(m, str) or not 1 <= len(m) <= 64 or \
                any(not 0x21 <= ord(ch) <= 0x7e for ch in m) or \
                m.startswith("rpc."):
            return bad("bad method name %r" % (m,))
        if has_id and msg["id"] is None:
            return bad("a request with id null")
        if "params" in msg and not isinstance(msg["params"], (dict, list)):
            return bad("params is neither an object nor an array")
        if m not in known:
            return bad("method %s is in no method table of the code" % m)
        seen.add(m)
        return
    if not has_id:
        return bad("neither a request/notification nor a response")
    if ("result" in msg) == ("error" in msg):
        return bad("a response needs exactly one of result and error")
    if "params" in msg:
        return bad("a response with params")
    if "error" in msg:
        e = msg["error"]
        if not isinstance(e, dict) or set(e) - {"code", "message", "data"}:
            return bad("error is not {code, message, data}")
        if isinstance(e.get("code"), bool) or \
                not isinstance(e.get("code"), int):
            return bad("error code is not an integer")
        if not isinstance(e.get("message"), str):
            return bad("error message is not a string")
        d = e.get("data")
        if not isinstance(d, dict) or not isinstance(d.get("reason"), str):
            return bad("error without data.reason")
    elif msg["id"] is None:
        return bad("a result with id null")

with open(doc, encoding="utf-8") as f:
    for no, line in enumerate(f, 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if not (in_fence or line.startswith("    ")):
            continue
        if "-->" not in line and "<--" not in line:
            continue
        if line.rstrip().endswith("(malformed on purpose)"):
            continue
        arrow = max(line.find("-->"), line.find("<--"))
        rest = line[arrow + 3:]
        start = min([p for p in (rest.find("{"), rest.find("[")) if p >= 0],
                    default=-1)
        if start < 0:
            continue  # "(...)" commentary in a flow
        text = rest[start:].rstrip("\n")
        count += 1
        try:
            msg, end = json.JSONDecoder().raw_decode(text)
        except ValueError as e:
            problems.append("%s:%d: not JSON: %s" % (doc, no, e))
            continue
        if text[end:].strip():
            problems.append("%s:%d: text after the JSON message" % (doc, no))
            continue
        check(no, msg)

for m in sorted(known - seen):
    problems.append("%s: method %s has no example request" % (doc, m))
if count == 0:
    problems.append("%s: no example lines found" % doc)
for p in problems:
    print(p)
print("protocol_examples: %d example line(s), %d method(s), %d problem(s)"
      % (count, len(seen), len(problems)))
sys.exit(1 if problems else 0)
PY
