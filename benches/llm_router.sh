#!/usr/bin/env bash
# LLM routers side by side, in front of the same eight emulated model servers.
#
#   bash benches/llm_router.sh
#
# Builds `examples/model_server`, `examples/llm_load`, `examples/proxy` and
# (when it exists) `examples/llm_router` in release mode; installs
# sglang-router into a virtualenv under /var/tmp if it is missing; starts eight
# model servers on 127.0.0.1 (prefix cache, batch, prefill and decode time) and
# runs one recorded workload (multi-turn chats over Zipf-popular shared system
# prompts, streamed; the same for every target, it follows from SEED) against:
#
#   direct       llm_load straight to the eight servers in turn
#   tower-lb     examples/llm_router, its default: least predicted time to first
#                token (Scored::ttft)
#   tower-lb-poll    the same, also polling each server's Prometheus page
#                every 50 ms (--metrics-path /metrics --metrics-interval 50ms)
#   tower-lb-scores  examples/llm_router --scorer prefix=3,queue=2,kv=2 (the
#                0.2 default: weighted scorers and the imbalance gate)
#   sglang-ca    sglang-router --policy cache_aware
#   sglang-rr    sglang-router --policy round_robin
#   lc           examples/proxy --algorithm least-connections --workers 1
#   rr           examples/proxy --algorithm round-robin --workers 1
#
# Targets are measured in turn, round after round, so a change in the
# machine's load hits them all; each measurement empties the servers' caches
# first.
#
# Closed loop (the default): IN_FLIGHT chats' turns at a time, each
# measurement twice: as a plain client, and with TCP_QUICKACK on the client
# (which removes the wait for a delayed ACK behind a router that leaves
# Nagle's algorithm on). Prints per round and the medians: TTFT p50/p99 (plain
# and quick-ACK), tokens/s, the fleet's prefix-cache hit rate, the busiest
# server's requests ÷ the mean, and the router's CPU time per request (summed
# over its replicas).
#
# Open loop (RATES="12 30 50"): chats arrive at each rate (a Poisson process
# from SEED, in chats a second) until DURATION has passed or SESSIONS chats
# have arrived, whichever comes first; each chat sends its next turn THINK
# after its previous answer ended. Prints per target and rate, per round and
# the medians: TTFT p50/p99, goodput (the share of requests whose first token
# came within SLO), tokens/s, hit rate, busiest ÷ mean, router CPU per request.
# Give SESSIONS enough chats to fill DURATION: rate × duration (50 × 20 s =
# 1000).
#
# Replicas (REPLICAS=4): every router target runs as that many processes over
# the same servers (each with its own view of them), and llm_load sends the
# requests to them in turn, so the turns of a chat meet different replicas.
#
# Disaggregated (PD=1): the eight servers are four prefill servers and four
# decode servers of examples/model_server speaking SGLang's protocol
# (--role prefill|decode --pd-protocol sglang, a KV hand-over of KV_PER_TOKEN
# per prompt token), and the targets are
#
#   tower-lb-pd  examples/llm_router --prefill URL#BOOTSTRAP_PORT --decode URL
#                (the prefill server by Scored::ttft, the decode server by
#                decode load)
#   sglang-pd    sglang-router --pd-disaggregation --prefill URL BOOTSTRAP_PORT
#                --decode URL, its default policy (cache_aware) or SGLANG_PD_ARGS
#
# The hit rate and busiest ÷ mean are the prefill servers'.
#
# Small caches: CACHE_TOKENS=3333 (a sixth of the default) puts the servers'
# prefix caches under pressure: the popular system prompts and the chats'
# histories no longer all fit, and routing that keeps a chat on one server
# matters more.
#
# Settings (environment): ROUNDS (3), SESSIONS (64), TURNS (6), IN_FLIGHT
# (16; use 48 for three times the load), MAX_TOKENS (32), SEED (1),
# CACHE_TOKENS (20000 per server), BATCH (8), PREFILL (100us per uncached
# token), DECODE (5ms per token), RATES (empty: closed loop), DURATION (20s),
# THINK (200ms), SLO (200ms), REPLICAS (1, at most 10), PD (0), KV_PER_TOKEN
# (2us), SGLANG_PD_ARGS (--policy cache_aware), VENV
# (/var/tmp/sglang-venv), TARGETS (default "direct tower-lb sglang-ca
# sglang-rr lc rr"), ROUTER_ARGS (extra flags for examples/llm_router, say
# `--scorer prefix=6,queue=2,kv=2`), PROXY (a proxy binary to use for lc and
# rr instead of building examples/proxy), LOAD_LIMIT (600: seconds one
# llm_load run may take before it is stopped). Traffic stays on 127.0.0.1; sglang-router
# gets HF_ENDPOINT pointing at a closed loopback port, so it never reaches out
# for a tokenizer, and its Prometheus listener on 127.0.0.1. Everything stops
# when the script ends.
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
RATES=${RATES:-}
DURATION=${DURATION:-20s}
THINK=${THINK:-200ms}
SLO=${SLO:-200ms}
REPLICAS=${REPLICAS:-1}
VENV=${VENV:-/var/tmp/sglang-venv}
PD=${PD:-0}
KV_PER_TOKEN=${KV_PER_TOKEN:-2us}
SGLANG_PD_ARGS=${SGLANG_PD_ARGS:---policy cache_aware}
if ((PD)); then
    TARGETS=${TARGETS:-tower-lb-pd sglang-pd}
else
    TARGETS=${TARGETS:-direct tower-lb sglang-ca sglang-rr lc rr}
fi
ROUTER_ARGS=${ROUTER_ARGS:-}
LOAD_LIMIT=${LOAD_LIMIT:-600}
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

if ((REPLICAS < 1 || REPLICAS > 10)); then
    say "REPLICAS must be 1 to 10"
    exit 2
fi

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
features=()
have_router=0
if [[ -f $root/examples/llm_router/main.rs ]]; then
    features=(--features llm,reports)
    examples+=(--example llm_router)
    have_router=1
fi
say "building ${examples[*]}"
(cd "$root" && cargo build --release --quiet "${features[@]}" "${examples[@]}")
proxy=${PROXY:-}
if [[ -z $proxy && " $TARGETS " =~ " "(lc|rr)" " ]]; then
    say "building --example proxy"
    if ! (cd "$root" && cargo build --release --quiet "${features[@]}" --example proxy); then
        say "examples/proxy does not build; set PROXY to a proxy binary, or leave lc and rr out of TARGETS"
        exit 1
    fi
    proxy=$bin/proxy
fi

if [[ " $TARGETS " == *" sglang-"* && ! -x $VENV/bin/sglang-router ]]; then
    say "installing sglang-router into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet sglang-router
fi

# ----- servers -----
# In PD mode the first half prefill (bootstrap port BASE_PORT + 100 + i), the
# rest decode; stat_urls are the servers whose hit rate and spread count.
urls=() addrs=() stat_urls=() prefill_urls=() bootstrap_ports=() decode_urls=()
for i in $(seq $SERVERS); do
    port=$((BASE_PORT + i))
    role=()
    if ((PD)); then
        if ((i <= SERVERS / 2)); then
            role=(--role prefill --bootstrap-port $((BASE_PORT + 100 + i)))
            prefill_urls+=("http://127.0.0.1:$port")
            bootstrap_ports+=($((BASE_PORT + 100 + i)))
            stat_urls+=("http://127.0.0.1:$port")
        else
            role=(--role decode)
            decode_urls+=("http://127.0.0.1:$port")
        fi
        role+=(--pd-protocol sglang --kv-per-token "$KV_PER_TOKEN")
    else
        stat_urls+=("http://127.0.0.1:$port")
    fi
    "$bin/model_server" --listen "127.0.0.1:$port" --cache-tokens "$CACHE_TOKENS" \
        --batch "$BATCH" --prefill-per-token "$PREFILL" --decode-per-token "$DECODE" \
        --seed "$SEED" "${role[@]}" >"$work/server$i.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:$port")
    addrs+=("127.0.0.1:$port")
done
for url in "${urls[@]}"; do wait_http "$url/health"; done

# ----- routers -----
# Target number k's replica r listens on BASE_PORT + 20 + 10k + r.
declare -A ports_of=() pids_of=()
start_router() { # NAME PORT COMMAND...: one replica
    local name=$1 port=$2
    shift 2
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
    pids_of[$name]+=" $!"
    ports_of[$name]+=" $port"
}
k=0
for t in $TARGETS; do
    k=$((k + 1))
    for r in $(seq 0 $((REPLICAS - 1))); do
        port=$((BASE_PORT + 20 + 10 * k + r))
        case $t in
        direct)
            ((PD)) && { say "direct needs whole servers; not with PD=1"; exit 2; }
            break
            ;;
        tower-lb-pd)
            ((have_router && PD)) || { say "tower-lb-pd needs PD=1"; exit 2; }
            legs=()
            for j in "${!prefill_urls[@]}"; do
                legs+=(--prefill "${prefill_urls[$j]}#${bootstrap_ports[$j]}")
            done
            for url in "${decode_urls[@]}"; do legs+=(--decode "$url"); done
            start_router "$t" "$port" "$bin/llm_router" \
                --listen "127.0.0.1:$port" "${legs[@]}" --pd-protocol sglang $ROUTER_ARGS
            ;;
        sglang-pd)
            ((PD)) || { say "sglang-pd needs PD=1"; exit 2; }
            legs=()
            for j in "${!prefill_urls[@]}"; do
                legs+=(--prefill "${prefill_urls[$j]}" "${bootstrap_ports[$j]}")
            done
            for url in "${decode_urls[@]}"; do legs+=(--decode "$url"); done
            # shellcheck disable=SC2086 # SGLANG_PD_ARGS is a list of flags
            start_router "$t" "$port" env HF_ENDPOINT=http://127.0.0.1:9 \
                "$VENV/bin/sglang-router" launch --host 127.0.0.1 --port "$port" \
                --pd-disaggregation "${legs[@]}" $SGLANG_PD_ARGS \
                --prometheus-host 127.0.0.1 --prometheus-port $((port + 500)) --log-level warn
            ;;
        tower-lb | tower-lb-poll | tower-lb-scores)
            ((have_router)) || break
            backends=()
            for url in "${urls[@]}"; do backends+=(--backend "$url"); done
            scores=()
            [[ $t == tower-lb-scores ]] && scores=(--scorer prefix=3,queue=2,kv=2)
            [[ $t == tower-lb-poll ]] && scores=(--metrics-path /metrics --metrics-interval 50ms)
            start_router "$t" "$port" "$bin/llm_router" \
                --listen "127.0.0.1:$port" "${backends[@]}" "${scores[@]}" $ROUTER_ARGS
            ;;
        sglang-ca | sglang-rr)
            policy=cache_aware
            [[ $t == sglang-rr ]] && policy=round_robin
            start_router "$t" "$port" env HF_ENDPOINT=http://127.0.0.1:9 \
                "$VENV/bin/sglang-router" launch --host 127.0.0.1 --port "$port" \
                --worker-urls "${urls[@]}" --policy "$policy" \
                --prometheus-host 127.0.0.1 --prometheus-port $((port + 500)) --log-level warn
            ;;
        lc | rr)
            algorithm=least-connections
            [[ $t == rr ]] && algorithm=round-robin
            backends=()
            for addr in "${addrs[@]}"; do backends+=(--backend "$addr"); done
            start_router "$t" "$port" env RUST_LOG=warn "$proxy" \
                --listen "127.0.0.1:$port" "${backends[@]}" --algorithm "$algorithm" --workers 1
            ;;
        *) say "unknown target $t"; exit 2 ;;
        esac
    done
done
for name in "${!ports_of[@]}"; do
    for port in ${ports_of[$name]}; do
        wait_http "http://127.0.0.1:$port/health" || wait_http "http://127.0.0.1:$port/v1/models"
    done
done
sleep 1 # sglang-router registers its workers after it listens

cpu_ticks() { # PID...: user + system clock ticks of the processes
    local sum=0 pid
    for pid in "$@"; do
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$sum"
}

fleet() { # prints "hit_rate busiest_over_mean requests" from the servers' /stats
    local cached=0 prompt=0 max=0 total=0 stats c p r
    for url in "${stat_urls[@]}"; do
        stats=$(curl -sf "$url/stats")
        c=$(sed -E 's/.*"cached_tokens":([0-9]+).*/\1/' <<<"$stats")
        p=$(sed -E 's/.*"prompt_tokens":([0-9]+).*/\1/' <<<"$stats")
        r=$(sed -E 's/.*"requests":([0-9]+).*/\1/' <<<"$stats")
        cached=$((cached + c)); prompt=$((prompt + p)); total=$((total + r))
        ((r > max)) && max=$r
    done
    # Under PD every request reaches one decode server (whole or as a
    # decode leg): they count the requests for the CPU per request.
    local requests=$total
    if ((PD)); then
        requests=0
        for url in "${decode_urls[@]}"; do
            stats=$(curl -sf "$url/stats")
            r=$(sed -E 's/.*"requests":([0-9]+).*/\1/' <<<"$stats")
            requests=$((requests + r))
        done
    fi
    awk -v c=$cached -v p=$prompt -v m=$max -v t=$total -v n=${#stat_urls[@]} -v q=$requests \
        'BEGIN { printf "%.3f %.2f %d\n", (p ? c / p : 0), (t ? m * n / t : 0), q }'
}

json() { # FIELD JSON
    sed -E "s/.*\"$1\":([0-9.eE+-]+|null).*/\1/" <<<"$2"
}

# One run; prints a result line:
#   target quickack p50 p99 tokens/s hit busiest cpu_us/request errors rate goodput
measure() { # TARGET QUICKACK(0/1) RATE(0: closed loop)
    local t=$1 quick=$2 rate=$3 args=() before after out port
    for url in "${urls[@]}"; do curl -sf -X POST -o /dev/null "$url/flush_cache"; done
    if [[ $t == direct ]]; then
        for url in "${urls[@]}"; do args+=(--target "$url"); done
    else
        for port in ${ports_of[$t]}; do args+=(--target "http://127.0.0.1:$port"); done
    fi
    ((quick)) && args+=(--quickack)
    if [[ $rate != 0 ]]; then
        args+=(--rate "$rate" --duration "$DURATION" --think "$THINK")
    else
        args+=(--in-flight "$IN_FLIGHT")
    fi
    # shellcheck disable=SC2086 # one pid a word
    before=$(cpu_ticks ${pids_of[$t]:-})
    out=$(timeout "$LOAD_LIMIT" "$bin/llm_load" "${args[@]}" --sessions "$SESSIONS" \
        --turns "$TURNS" --max-tokens "$MAX_TOKENS" --seed "$SEED" --slo "$SLO" || true)
    # shellcheck disable=SC2086
    after=$(cpu_ticks ${pids_of[$t]:-})
    read -r hit busiest total <<<"$(fleet)"
    local tick_ms
    tick_ms=$(awk -v hz="$(getconf CLK_TCK)" 'BEGIN { print 1000 / hz }')
    awk -v t="$t" -v q="$quick" -v p50="$(json ttft_p50_ms "$out")" -v p99="$(json ttft_p99_ms "$out")" \
        -v tps="$(json tokens_per_s "$out")" -v err="$(json errors "$out")" -v hit="$hit" \
        -v busy="$busiest" -v n="$total" -v cpu=$((after - before)) -v tick="$tick_ms" \
        -v rate="$rate" -v good="$(json goodput "$out")" \
        'BEGIN { printf "%s %d %.1f %.1f %.0f %.3f %.2f %.1f %d %s %.3f\n", t, q, p50, p99, tps, hit, busy, (n ? cpu * tick * 1000 / n : 0), err, rate, good }'
}

results=$work/results
: >"$results"
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
present() { # TARGET: measured at all
    [[ $1 == direct || -n ${ports_of[$1]:-} ]]
}
replicas_note=""
((REPLICAS > 1)) && replicas_note=", $REPLICAS replicas a router"

if [[ -z $RATES ]]; then
    say "closed loop, rounds: $ROUNDS; $SESSIONS chats × $TURNS turns, $IN_FLIGHT in flight, $MAX_TOKENS tokens an answer$replicas_note"
    for round in $(seq "$ROUNDS"); do
        for t in $TARGETS; do
            present "$t" || continue
            for quick in 0 1; do
                line=$(measure "$t" "$quick" 0)
                say "round $round: $line"
                echo "$line" >>"$results"
            done
        done
    done

    # ----- medians -----
    printf '\n| target | TTFT p50 | TTFT p99 | TTFT p50 (quick ACK) | TTFT p99 (quick ACK) | tokens/s | fleet hit rate | busiest ÷ mean | router CPU µs/request | errors |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
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
else
    say "open loop, rounds: $ROUNDS; rates $RATES chats/s for $DURATION (at most $SESSIONS chats) × $TURNS turns, think $THINK, SLO $SLO, $MAX_TOKENS tokens an answer$replicas_note"
    for round in $(seq "$ROUNDS"); do
        for rate in $RATES; do
            for t in $TARGETS; do
                present "$t" || continue
                line=$(measure "$t" 0 "$rate")
                say "round $round: $line"
                echo "$line" >>"$results"
            done
        done
    done

    # ----- medians -----
    printf '\n| target | chats/s | TTFT p50 | TTFT p99 | goodput (TTFT ≤ %s) | tokens/s | fleet hit rate | busiest ÷ mean | router CPU µs/request | errors |\n' "$SLO"
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    for t in $TARGETS; do
        for rate in $RATES; do
            grep -q "^$t " "$results" || continue
            col() { awk -v t="$t" -v r="$rate" -v c="$1" '$1 == t && $10 == r { print $c }' "$results" | median; }
            cpu=$(col 8)
            [[ $t == direct ]] && cpu="—"
            printf '| %s | %s | %s ms | %s ms | %s%% | %s | %s%% | %s | %s | %s |\n' "$t" "$rate" \
                "$(col 3)" "$(col 4)" "$(awk -v g="$(col 11)" 'BEGIN { printf "%.1f", g * 100 }')" \
                "$(col 5)" "$(awk -v h="$(col 6)" 'BEGIN { printf "%.1f", h * 100 }')" "$(col 7)" "$cpu" \
                "$(awk -v t="$t" -v r="$rate" '$1 == t && $10 == r { s += $9 } END { print s + 0 }' "$results")"
        done
    done
fi
