#!/usr/bin/env bash
# Mid-stream failover under load: streamed chats through examples/llm_router
# while its model servers are killed one after another.
#
#   bash benches/llm_failover.sh
#
# Builds `examples/model_server`, `examples/llm_router` and
# `examples/llm_failover_check` (PROFILE, release by default); starts SERVERS
# model servers on 127.0.0.1 and one more outside the router (the reference:
# same seed, never killed); starts the router over the SERVERS; runs
# llm_failover_check (CHATS streamed chats of MAX_TOKENS tokens, IN_FLIGHT at
# a time, each checked word for word against the reference's uninterrupted
# answer, asked of the reference first, which answers at once) while, every
# KILL_EVERY seconds, one server in turn is killed with
# SIGKILL mid-answer and started again on its port. Stops by itself when the
# chats are done (or after LIMIT seconds). Prints the checker's line
# (chats, ok, failed, cut, mismatched, bad_usage, wall_s), the kills, and the
# router's failover counters from /metrics; exits non-zero when a chat is not
# ok.
#
# Settings (environment): SERVERS (8), CHATS (1280), IN_FLIGHT (32),
# MAX_TOKENS (100), DECODE (5ms per token), KILL_EVERY (2 s), FAILOVERS (1,
# the router's --failovers), EJECTION (1s, the router's --ejection),
# PROFILE (release), LIMIT (600 s). Everything listens on 127.0.0.1 and stops
# when the script ends.
set -euo pipefail

SERVERS=${SERVERS:-8}
CHATS=${CHATS:-1280}
IN_FLIGHT=${IN_FLIGHT:-32}
MAX_TOKENS=${MAX_TOKENS:-100}
DECODE=${DECODE:-5ms}
KILL_EVERY=${KILL_EVERY:-2}
FAILOVERS=${FAILOVERS:-1}
EJECTION=${EJECTION:-1s}
PROFILE=${PROFILE:-release}
LIMIT=${LIMIT:-600}

cd "$(dirname "$0")/.."
cargo build --quiet --profile "$PROFILE" --features llm,reports \
  --example model_server --example llm_router --example llm_failover_check
case "$PROFILE" in
  dev) dir_name=debug ;;
  *) dir_name=$PROFILE ;;
esac
bin="${CARGO_TARGET_DIR:-target}/$dir_name/examples"

work=$(mktemp -d)
cleanup() {
  for f in "$work"/*.pid; do
    [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits for a process's first line (its address) in $1 and prints the address.
address() {
  for _ in $(seq 1 200); do
    if grep -q "http://" "$1" 2>/dev/null; then
      head -n1 "$1" | sed 's#.*http://##'
      return 0
    fi
    sleep 0.05
  done
  echo "no address in $1" >&2
  return 1
}

# start_server NAME LISTEN DECODE [ARGS]: starts a model server, records its
# pid and address.
start_server() {
  local name=$1 listen=$2 decode=$3
  shift 3
  "$bin/model_server" --listen "$listen" --decode-per-token "$decode" "$@" \
    >"$work/$name.out" 2>/dev/null &
  echo $! >"$work/$name.pid"
  disown $!
  address "$work/$name.out" >"$work/$name.addr"
}

for i in $(seq 1 "$SERVERS"); do
  start_server "s$i" 127.0.0.1:0 "$DECODE"
done
# The reference answers at once (its words do not depend on time or batch),
# so checking an answer does not keep a chat from the router.
start_server reference 127.0.0.1:0 0s --batch 256

backends=()
for i in $(seq 1 "$SERVERS"); do
  backends+=(--backend "http://$(cat "$work/s$i.addr")")
done
admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/llm_router" --listen 127.0.0.1:0 --admin "127.0.0.1:$admin_port" \
  --failovers "$FAILOVERS" --ejection "$EJECTION" "${backends[@]}" \
  >"$work/router.out" 2>"$work/router.err" &
echo $! >"$work/router.pid"
disown $!
router=$(address "$work/router.out")

# The killer: every KILL_EVERY seconds the next server dies and comes back
# on its port.
(
  n=0
  while [ ! -e "$work/done" ]; do
    sleep "$KILL_EVERY"
    [ -e "$work/done" ] && break
    i=$((n % SERVERS + 1))
    n=$((n + 1))
    kill -9 "$(cat "$work/s$i.pid")" 2>/dev/null || true
    addr=$(cat "$work/s$i.addr")
    for _ in $(seq 1 50); do
      : >"$work/s$i.out"
      "$bin/model_server" --listen "$addr" --decode-per-token "$DECODE" \
        >"$work/s$i.out" 2>/dev/null &
      echo $! >"$work/s$i.pid"
      disown $!
      if address "$work/s$i.out" >/dev/null 2>&1; then break; fi
      sleep 0.05
    done
    echo "$n" >"$work/kills"
  done
) &
echo $! >"$work/killer.pid"

status=0
result=$(timeout "$LIMIT" "$bin/llm_failover_check" --target "http://$router" \
  --reference "http://$(cat "$work/reference.addr")" --chats "$CHATS" \
  --in-flight "$IN_FLIGHT" --max-tokens "$MAX_TOKENS" 2>"$work/check.err") || status=$?
touch "$work/done"
wait "$(cat "$work/killer.pid")" 2>/dev/null || true

echo "servers=$SERVERS chats=$CHATS in_flight=$IN_FLIGHT max_tokens=$MAX_TOKENS kill_every=${KILL_EVERY}s failovers=$FAILOVERS"
echo "check: $result"
echo "kills: $(cat "$work/kills" 2>/dev/null || echo 0)"
curl -s "http://127.0.0.1:$admin_port/metrics" | grep '^llm_router_failovers_total' || true
if [ -s "$work/check.err" ]; then
  echo "chats not ok (first 20):"
  head -n 20 "$work/check.err"
fi
exit "$status"
