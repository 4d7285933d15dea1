#!/usr/bin/env bash
# Runs every measurement of docs/PERFORMANCE.md, three times each, into $OUT (default
# target/bench-results). Build first: cargo build --release -p m2m-bench -p m2m-cli
# PostgreSQL runs need PG_URL (a role that may create databases), e.g.
#   PG_URL='postgres://m2m:m2m@127.0.0.1:5432/m2m_bench_{unique}'
set -euo pipefail
cd "$(dirname "$0")/../.."
B=target/release/m2m-bench
OUT=${OUT:-target/bench-results}
mkdir -p "$OUT"
run() { local name=$1; shift; echo "== $name: $*" >&2; "$@" > "$OUT/$name.json"; }

for i in 1 2 3; do
  run "crypto.$i" $B crypto --duration 1s
  run "loopback.$i" $B loopback --duration 2s
done
run hub-sqlite         $B hub --agents 10000 --concurrency 64 --repeat 3
run hub-sqlite-pipe8   $B hub --agents 10000 --concurrency 64 --pipeline 8 --repeat 3
run hub-sqlite-groups  $B hub --agents 10000 --concurrency 64 --capability-groups 100 --actions discover --repeat 3
if [ -n "${PG_URL:-}" ]; then
  run hub-postgres     $B hub --agents 10000 --concurrency 64 --database "$PG_URL" --repeat 3
fi
run hub-m2m-cli        $B hub --hub-cmd m2m --agents 10000 --concurrency 64 --repeat 3
# The original JavaScript hub beside ours, on the same PostgreSQL: ORIG_HUB_JS is its hub.js
# (m2mai/M2M after `npm install`; not part of this repository), ORIG_PG its connection
# settings, a fresh database per run.
if [ -n "${ORIG_HUB_JS:-}" ]; then
  ORIG_PG=${ORIG_PG:-DATABASE_HOST=127.0.0.1 DATABASE_USER=m2m DATABASE_PASSWORD=m2m}
  run hub-original     $B hub --agents 10000 --concurrency 64 --repeat 3 \
    --hub-cmd "env PORT={port} $ORIG_PG DATABASE_SSL=false DATABASE_NAME={database} node $ORIG_HUB_JS" \
    --database 'm2m_orig_{unique}'
fi
run p2p                $B p2p --repeat 3
# The original JavaScript SDK beside ours (ORIG_AGENT_JS: m2mai/M2M's agent.js after
# `npm install`): our SDK sending to an original peer, and the original SDK sending to an
# original peer and to ours (crates/m2m-bench/js/original-p2p.js drives it), through an
# `m2m hub`.
if [ -n "${ORIG_AGENT_JS:-}" ]; then
  J=crates/m2m-bench/js/original-p2p.js
  run p2p-to-original  $B p2p --repeat 3 --peer-cmd "node $J peer $ORIG_AGENT_JS" \
    --scenarios messages,bulk,fresh,request,request-pipelined   # 2.0 only: no fresh-v21
  target/release/m2m hub --bind 127.0.0.1 --port 0 --database sqlite::memory: --json > "$OUT/hub.line" &
  hub_pid=$!
  for _ in $(seq 1 100); do grep -q '"ws"' "$OUT/hub.line" 2>/dev/null && break; sleep 0.1; done
  ws=$(sed -n 's/.*"ws":"\([^"]*\)".*/\1/p' "$OUT/hub.line")
  for i in 1 2 3; do
    run "p2p-original-to-original.$i" node $J drive "$ORIG_AGENT_JS" --hub "$ws" --peer-cmd "node $J peer $ORIG_AGENT_JS"
    run "p2p-original-to-ours.$i"     node $J drive "$ORIG_AGENT_JS" --hub "$ws" --peer-cmd "$B p2p-peer"
  done
  kill "$hub_pid"; rm -f "$OUT/hub.line"
fi
run p2p-threads1       $B --threads 1 p2p --repeat 3
# Memory: one agent per WebSocket up to the descriptor limit, then 100k agents over
# 16,667 WebSockets (6 each), every agent heartbeating every 30 s.
for n in 6000 16667; do
  run "hub-hold-$n"    $B hub --agents $n --actions none --hold 65s
done
run hub-hold-100k-x6   $B hub --agents 100000 --agents-per-connection 6 --actions none --hold 65s
