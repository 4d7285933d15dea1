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
run p2p                $B p2p --repeat 3
run p2p-threads1       $B --threads 1 p2p --repeat 3
# Memory: one agent per WebSocket up to the descriptor limit, then 100k agents over
# 16,667 WebSockets (6 each), every agent heartbeating every 30 s.
for n in 6000 16667; do
  run "hub-hold-$n"    $B hub --agents $n --actions none --hold 65s
done
run hub-hold-100k-x6   $B hub --agents 100000 --agents-per-connection 6 --actions none --hold 65s
