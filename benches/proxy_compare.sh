#!/usr/bin/env bash
# The proxy example against nginx and HAProxy, in front of the same two
# backends.
#
#   bash benches/proxy_compare.sh
#
# Installs nginx, HAProxy, wrk (and curl) from Debian's packages if missing, builds
# `examples/proxy` and `examples/hello_backend` in release mode, starts two
# backends on 127.0.0.1, and runs wrk against:
#
#   direct  one backend, no proxy (the ceiling)
#   proxy   examples/proxy --workers 1 --algorithm round-robin
#   nginx   one worker process, the same upstream (round robin, keepalive 64)
#   haproxy one thread (nbthread 1), the same servers (round robin,
#           http-reuse always)
#
# All three proxies append X-Forwarded-For and keep connections to the
# backends alive. Targets are measured in turn, round after round, so that a
# change in the machine's load hits all four. Prints requests/s and p99 latency for
# each round, the median of the rounds, and the ratios.
#
# Settings (environment): ROUNDS (3), DURATION (5s per target and round),
# CONNECTIONS (64), THREADS (1: `wrk -t1 -c64`). Everything listens on 127.0.0.1 and stops
# when the script ends.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/proxy-compare.XXXXXX")
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

# ----- tools -----
nginx_bin=$(command -v nginx || true)
[[ -z $nginx_bin && -x /usr/sbin/nginx ]] && nginx_bin=/usr/sbin/nginx
missing=()
[[ -z $nginx_bin ]] && missing+=(nginx-light)
haproxy_bin=$(command -v haproxy || true)
[[ -z $haproxy_bin && -x /usr/sbin/haproxy ]] && haproxy_bin=/usr/sbin/haproxy
[[ -z $haproxy_bin ]] && missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo=sudo
    apt() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq "$@"; }
    apt update
    if ! apt install -y "${missing[@]}" >/dev/null; then
        # Newer Debian releases ship only `nginx`.
        apt install -y "${missing[@]/nginx-light/nginx}" >/dev/null
    fi
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
fi

say "building the proxy and the backend (release)"
(cd "$root" && cargo build --release --quiet --example proxy --example hello_backend)
bin=$target/release/examples

# ----- processes -----

# Starts a program whose stdout announces `listening on ADDR` and sets
# `addr` to ADDR. It runs in this shell (not in `$(...)`), so that its pid
# is recorded for the cleanup.
start() {
    local name=$1
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    pids+=("$pid")
    local line
    for _ in $(seq 100); do
        if line=$(grep -m1 -o 'listening on [^ ]*' "$work/$name.out" 2>/dev/null); then
            addr=${line#listening on }
            return
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    say "$name did not start:"
    cat "$work/$name.err" >&2
    exit 1
}

# A port nothing listens on (connecting to it is refused).
free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    say "no free port found"
    exit 1
}

start backend1 "$bin/hello_backend" --listen 127.0.0.1:0
backend1=$addr
start backend2 "$bin/hello_backend" --listen 127.0.0.1:0
backend2=$addr
start proxy "$bin/proxy" --listen 127.0.0.1:0 --workers 1 --algorithm round-robin \
    --backend "$backend1" --backend "$backend2"
proxy=$addr

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream backends {
        server $backend1;
        server $backend2;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/out.log" 2>&1 &
pids+=("$!")
nginx="127.0.0.1:$nginx_port"
for _ in $(seq 100); do
    curl -fs "http://$nginx/" >/dev/null 2>&1 && break
    sleep 0.1
done

haproxy_port=$(free_port)
cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option forwardfor
    http-reuse always
frontend front
    bind 127.0.0.1:$haproxy_port
    default_backend backends
backend backends
    balance roundrobin
    server b1 $backend1
    server b2 $backend2
EOF
"$haproxy_bin" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=("$!")
haproxy="127.0.0.1:$haproxy_port"
for _ in $(seq 100); do
    curl -fs "http://$haproxy/" >/dev/null 2>&1 && break
    sleep 0.1
done

for target_addr in "$backend1" "$proxy" "$nginx" "$haproxy"; do
    answer=$(curl -fs "http://$target_addr/") || { say "no answer from $target_addr"; exit 1; }
    [[ $answer == hello* ]] || { say "unexpected answer from $target_addr: $answer"; exit 1; }
done

# ----- measurement -----

# wrk's latency with its unit, in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000
        else if (v ~ /ms$/) n += 0
        else if (v ~ /s$/) n *= 1000
        printf "%.2f", n
    }'
}

# Runs wrk once; prints "requests/s p99-ms".
measure() {
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://$1/")
    local rps p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx or 3xx responses:/ {print $5} /Socket errors:/ {print "socket-errors"}' <<<"$out")
    if [[ -n $errors ]]; then
        say "wrk against $1 reported errors:"
        say "$out"
    fi
    echo "$rps $(to_ms "$p99")"
}

names=(direct proxy nginx haproxy)
addrs=("$backend1" "$proxy" "$nginx" "$haproxy")
say "warming up"
for addr in "${addrs[@]}"; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d1s "http://$addr/" >/dev/null
done

declare -A rps p99
printf '%-7s %-8s %12s %10s\n' round target requests/s p99-ms
for round in $(seq "$ROUNDS"); do
    for i in "${!names[@]}"; do
        read -r r p < <(measure "${addrs[$i]}")
        rps[${names[$i]},$round]=$r
        p99[${names[$i]},$round]=$p
        printf '%-7s %-8s %12.0f %10.2f\n' "$round" "${names[$i]}" "$r" "$p"
    done
done

median() { tr ' ' '\n' | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A med_rps med_p99
for name in "${names[@]}"; do
    r_list="" p_list=""
    for round in $(seq "$ROUNDS"); do
        r_list+="${rps[$name,$round]} "
        p_list+="${p99[$name,$round]} "
    done
    med_rps[$name]=$(echo "$r_list" | xargs | median)
    med_p99[$name]=$(echo "$p_list" | xargs | median)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "median of $ROUNDS rounds (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores):"
printf '%-8s %12s %10s %12s\n' target requests/s p99-ms vs-direct
for name in "${names[@]}"; do
    printf '%-8s %12.0f %10.2f %11sx\n' "$name" "${med_rps[$name]}" "${med_p99[$name]}" \
        "$(ratio "${med_rps[$name]}" "${med_rps[direct]}")"
done
echo "proxy / nginx: $(ratio "${med_rps[proxy]}" "${med_rps[nginx]}")x requests/s," \
    "$(ratio "${med_p99[proxy]}" "${med_p99[nginx]}")x p99"
echo "proxy / haproxy: $(ratio "${med_rps[proxy]}" "${med_rps[haproxy]}")x requests/s," \
    "$(ratio "${med_p99[proxy]}" "${med_p99[haproxy]}")x p99"
