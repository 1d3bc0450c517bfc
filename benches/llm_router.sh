#!/usr/bin/env bash
# LLM routers side by side, in front of the same eight emulated model servers.
#
#   bash benches/llm_router.sh
#
# Builds `examples/model_server`, `examples/llm_load` and (when it exists)
# `examples/llm_router` in release mode; installs sglang-router into a
# virtualenv under /var/tmp if it is missing; starts eight model servers on
# 127.0.0.1 (prefix cache, batch, prefill and decode time) and runs one
# recorded workload (multi-turn chats over Zipf-popular shared system
# prompts, streamed; the same for every target, it follows from SEED) against:
#
#   direct       llm_load straight to the eight servers in round robin
#   tower-lb     examples/llm_router, default scorers (prefix=3,queue=2,kv=2)
#   sglang-ca    sglang-router --policy cache_aware
#   sglang-rr    sglang-router --policy round_robin
#
# Targets are measured in turn, round after round, so a change in the
# machine's load hits them all; each measurement empties the servers' caches
# first, and runs twice: as a plain client, and with TCP_QUICKACK on the
# client (which removes the wait for a delayed ACK behind a router that leaves
# Nagle's algorithm on). Prints per round and the medians: TTFT p50/p99 (plain
# and quick-ACK), tokens/s, the fleet's prefix-cache hit rate, the busiest
# server's requests ÷ the mean, and the router's CPU time per request.
#
# Settings (environment): ROUNDS (3), SESSIONS (64), TURNS (6), IN_FLIGHT
# (16; use 48 for three times the load), MAX_TOKENS (32), SEED (1),
# CACHE_TOKENS (20000 per server), BATCH (8), PREFILL (100us per uncached
# token), DECODE (5ms per token), VENV (/var/tmp/sglang-venv), TARGETS
# (default "direct tower-lb sglang-ca sglang-rr"), ROUTER_ARGS (extra flags
# for examples/llm_router, say `--scorer prefix=6,queue=2,kv=2`). Traffic stays on
# 127.0.0.1; sglang-router gets HF_ENDPOINT pointing at a closed loopback
# port, so it never reaches out for a tokenizer, and its Prometheus listener
# on 127.0.0.1. Everything stops when the script ends.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-64}
TURNS=${TURNS:-6}
IN_FLIGHT=${IN_FLIGHT:-16}
MAX_TOKENS=${MAX_TOKENS:-32}
SEED=${SEED:-1}
CACHE_TOKENS=${CACHE_TOKENS:-20000}
BATCH=${BATCH:-8}
PREFILL=${PREFILL:-100us}
DECODE=${DECODE:-5ms}
VENV=${VENV:-/var/tmp/sglang-venv}
TARGETS=${TARGETS:-direct tower-lb sglang-ca sglang-rr}
ROUTER_ARGS=${ROUTER_ARGS:-}
SERVERS=8
BASE_PORT=${BASE_PORT:-18300}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release/examples
work=$(mktemp -d "${TMPDIR:-/tmp}/llm-router.XXXXXX")
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }

wait_http() { # URL: until it answers, at most 10 s
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    say "no answer from $1"
    return 1
}

# ----- build -----
examples=(--example model_server --example llm_load)
have_router=0
if [[ -f $root/examples/llm_router/main.rs ]]; then
    examples+=(--features llm,reports --example llm_router)
    have_router=1
fi
say "building ${examples[*]}"
(cd "$root" && cargo build --release --quiet "${examples[@]}")

if [[ " $TARGETS " == *" sglang-"* && ! -x $VENV/bin/sglang-router ]]; then
    say "installing sglang-router into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet sglang-router
fi

# ----- servers -----
urls=()
for i in $(seq $SERVERS); do
    port=$((BASE_PORT + i))
    "$bin/model_server" --listen "127.0.0.1:$port" --cache-tokens "$CACHE_TOKENS" \
        --batch "$BATCH" --prefill-per-token "$PREFILL" --decode-per-token "$DECODE" \
        --seed "$SEED" >"$work/server$i.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:$port")
done
for url in "${urls[@]}"; do wait_http "$url/health"; done

# ----- routers -----
declare -A port_of=() pid_of=()
routers=()
start_router() { # NAME PORT COMMAND...
    local name=$1 port=$2
    shift 2
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    pid_of[$name]=$!
    port_of[$name]=$port
    routers+=("$name")
}
for t in $TARGETS; do
    case $t in
    direct) ;;
    tower-lb)
        if ((have_router)); then
            backends=()
            for url in "${urls[@]}"; do backends+=(--backend "$url"); done
            start_router tower-lb $((BASE_PORT + 10)) "$bin/llm_router" \
                --listen "127.0.0.1:$((BASE_PORT + 10))" "${backends[@]}" $ROUTER_ARGS
        fi
        ;;
    sglang-ca | sglang-rr)
        policy=cache_aware
        [[ $t == sglang-rr ]] && policy=round_robin
        port=$((BASE_PORT + 20 + ${#routers[@]}))
        start_router "$t" "$port" env HF_ENDPOINT=http://127.0.0.1:9 \
            "$VENV/bin/sglang-router" launch --host 127.0.0.1 --port "$port" \
            --worker-urls "${urls[@]}" --policy "$policy" \
            --prometheus-host 127.0.0.1 --prometheus-port $((port + 100)) --log-level warn
        ;;
    *) say "unknown target $t"; exit 2 ;;
    esac
done
for name in "${routers[@]}"; do
    wait_http "http://127.0.0.1:${port_of[$name]}/health" || wait_http "http://127.0.0.1:${port_of[$name]}/v1/models"
done
sleep 1 # sglang-router registers its workers after it listens

cpu_ticks() { # PID: user + system clock ticks of the process
    awk '{print $14 + $15}' "/proc/$1/stat"
}

fleet() { # prints "hit_rate busiest_over_mean requests" from the servers' /stats
    local cached=0 prompt=0 max=0 total=0 stats c p r
    for url in "${urls[@]}"; do
        stats=$(curl -sf "$url/stats")
        c=$(sed -E 's/.*"cached_tokens":([0-9]+).*/\1/' <<<"$stats")
        p=$(sed -E 's/.*"prompt_tokens":([0-9]+).*/\1/' <<<"$stats")
        r=$(sed -E 's/.*"requests":([0-9]+).*/\1/' <<<"$stats")
        cached=$((cached + c)); prompt=$((prompt + p)); total=$((total + r))
        ((r > max)) && max=$r
    done
    awk -v c=$cached -v p=$prompt -v m=$max -v t=$total -v n=$SERVERS \
        'BEGIN { printf "%.3f %.2f %d\n", (p ? c / p : 0), (t ? m * n / t : 0), t }'
}

json() { # FIELD JSON
    sed -E "s/.*\"$1\":([0-9.eE+-]+|null).*/\1/" <<<"$2"
}

measure() { # TARGET QUICKACK(0/1): one run, prints a result line
    local t=$1 quick=$2 args=() before after out
    for url in "${urls[@]}"; do curl -sf -X POST -o /dev/null "$url/flush_cache"; done
    if [[ $t == direct ]]; then
        for url in "${urls[@]}"; do args+=(--target "$url"); done
    else
        args+=(--target "http://127.0.0.1:${port_of[$t]}")
    fi
    ((quick)) && args+=(--quickack)
    before=0
    [[ -n ${pid_of[$t]:-} ]] && before=$(cpu_ticks "${pid_of[$t]}")
    out=$("$bin/llm_load" "${args[@]}" --sessions "$SESSIONS" --turns "$TURNS" \
        --in-flight "$IN_FLIGHT" --max-tokens "$MAX_TOKENS" --seed "$SEED" || true)
    after=0
    [[ -n ${pid_of[$t]:-} ]] && after=$(cpu_ticks "${pid_of[$t]}")
    read -r hit busiest total <<<"$(fleet)"
    local tick_ms
    tick_ms=$(awk -v hz="$(getconf CLK_TCK)" 'BEGIN { print 1000 / hz }')
    awk -v t="$t" -v q="$quick" -v p50="$(json ttft_p50_ms "$out")" -v p99="$(json ttft_p99_ms "$out")" \
        -v tps="$(json tokens_per_s "$out")" -v err="$(json errors "$out")" -v hit="$hit" \
        -v busy="$busiest" -v n="$total" -v cpu=$(((after - before))) -v tick="$tick_ms" \
        'BEGIN { printf "%s %d %.1f %.1f %.0f %.3f %.2f %.1f %d\n", t, q, p50, p99, tps, hit, busy, (n ? cpu * tick * 1000 / n : 0), err }'
}

say "rounds: $ROUNDS; $SESSIONS chats × $TURNS turns, $IN_FLIGHT in flight, $MAX_TOKENS tokens an answer"
results=$work/results
: >"$results"
for round in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
        [[ $t == tower-lb && $have_router == 0 ]] && continue
        for quick in 0 1; do
            line=$(measure "$t" "$quick")
            say "round $round: $line"
            echo "$line" >>"$results"
        done
    done
done

# ----- medians -----
printf '\n| target | TTFT p50 | TTFT p99 | TTFT p50 (quick ACK) | TTFT p99 (quick ACK) | tokens/s | fleet hit rate | busiest ÷ mean | router CPU µs/request | errors |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
for t in $TARGETS; do
    grep -q "^$t " "$results" || continue
    col() { awk -v t="$t" -v q="$1" -v c="$2" '$1 == t && $2 == q { print $c }' "$results" | median; }
    cpu=$(col 0 8)
    [[ $t == direct ]] && cpu="—"
    printf '| %s | %s ms | %s ms | %s ms | %s ms | %s | %s%% | %s | %s | %s |\n' "$t" \
        "$(col 0 3)" "$(col 0 4)" "$(col 1 3)" "$(col 1 4)" "$(col 0 5)" \
        "$(awk -v h="$(col 0 6)" 'BEGIN { printf "%.1f", h * 100 }')" "$(col 0 7)" "$cpu" \
        "$(awk -v t="$t" '$1 == t { s += $9 } END { print s + 0 }' "$results")"
done
