#!/usr/bin/env bash
# Drives examples/llm_router, over two examples/model_server processes,
# with the official `openai` Python client (in a virtualenv, made once):
# chat and completions, whole and streamed, usage when asked, the model
# list and the router's errors. Its output is in docs/guide-llm.md.
#
#   scripts/openai_client.sh
#
# OPENAI_VENV (default /var/tmp/tower-lb-openai-venv) is where the
# virtualenv lives; CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${OPENAI_VENV:-/var/tmp/tower-lb-openai-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet openai
fi

cargo build --quiet --features llm --example llm_router --example model_server
bin="${CARGO_TARGET_DIR:-target}/debug/examples"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

# Starts a process in the background and prints the address it announces.
start() {
    local out
    out="$(mktemp)"
    "$@" >"$out" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do
        if grep -q 'http://' "$out"; then
            grep -o 'http://[0-9.:]*' "$out" | head -1
            return
        fi
        sleep 0.1
    done
    echo "$* did not start" >&2
    exit 1
}

a="$(start "$bin/model_server" --listen 127.0.0.1:0 --decode-per-token 2ms)"
b="$(start "$bin/model_server" --listen 127.0.0.1:0 --decode-per-token 2ms)"
router="$(start "$bin/llm_router" --listen 127.0.0.1:0 \
    --backend "$a#emulated" --backend "$b#emulated" --max-body 65536)"
echo "openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)') against llm_router at $router"
"$venv/bin/python" scripts/openai_client.py "$router/v1"
