#!/usr/bin/env bash
# A short, bounded run of the decoder fuzz target (cargo-fuzz, libFuzzer).
#
#   scripts/fuzz.sh          # 60 seconds
#   scripts/fuzz.sh 600
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. New inputs that grow coverage land in
# fuzz/corpus/decode; `cargo test` replays that corpus on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cargo fuzz run decode fuzz/corpus/decode -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=70000 -rss_limit_mb=2048
