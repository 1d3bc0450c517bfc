#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time and prints a summary:
# executions, corpus size and findings per target. Not part of CI.
#
#   scripts/fuzz.sh            # 60 s a target
#   FUZZ_SECONDS=600 scripts/fuzz.sh backends forwarded
#
# Needs cargo-fuzz (installed here with `cargo install` if missing) and a
# nightly toolchain; without one, the stable toolchain is used with
# RUSTC_BOOTSTRAP=1, which lets it accept the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(backends forwarded hash_keys dns_answers)
fi

tools="${FUZZ_TOOLS:-/var/tmp/tower-lb-fuzz-tools}"
export PATH="$tools/bin:$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz into $tools" >&2
    cargo install cargo-fuzz --locked --root "$tools"
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
fi

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/tower-lb-fuzz-target}"
summary="$CARGO_TARGET_DIR/fuzz-summary.txt"
mkdir -p "$CARGO_TARGET_DIR"
: >"$summary"

# Inputs up to 64 KiB, so that the 8 KiB and 4 KiB caps are crossed.
max_len=65536
status=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    if [ -d "fuzz/seeds/$target" ]; then
        cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    fi
    log="$CARGO_TARGET_DIR/fuzz-$target.log"
    echo "== $target: ${seconds}s" >&2
    if cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz -O "$target" "$corpus" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        found="none"
    elif grep -q 'failed to build fuzz script' "$log"; then
        found="BUILD FAILED (see $log)"
        status=1
    else
        found="CRASH (see $log and fuzz/artifacts/$target)"
        status=1
    fi
    stat() { { grep -o "stat::$1: *[0-9]*" "$log" || true; } | grep -o '[0-9]*$' | tail -1; }
    runs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    cov=$({ grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | grep -o '[0-9]*' || true)
    files=$(find "$corpus" -type f | wc -l)
    printf '%-12s %4ss  %10s runs  %7s/s  cov %6s  corpus %5s  findings: %s\n' \
        "$target" "$seconds" "${runs:-?}" "${rate:-?}" "${cov:-?}" "$files" "$found" | tee -a "$summary"
done
echo "summary: $summary" >&2
exit $status
