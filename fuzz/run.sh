#!/bin/sh
# Coverage-guided fuzzing of one target on stable Rust: builds tests/targets.rs with
# libFuzzer's coverage instrumentation (bolero links libFuzzer in) and runs it.
#
#   sh fuzz/run.sh TARGET [SECONDS]     e.g. sh fuzz/run.sh relay_server 600
#
# TARGET: decoder, relay_server, relay_client or peer. The corpus and any crashing
# input go to fuzz/corpus/TARGET and fuzz/crashes/TARGET; a crash becomes a
# regression test in tests/regressions.rs (docs/RELIABILITY.md).
set -eu
target=${1:?usage: sh fuzz/run.sh TARGET [SECONDS]}
seconds=${2:-60}
cd "$(dirname "$0")/.."
flags="--cfg fuzzing -Cpasses=sancov-module --cfg fuzzing_libfuzzer \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
exe=$(BOLERO_FUZZER=libfuzzer RUSTFLAGS="$flags" cargo test --profile fuzz \
  --target x86_64-unknown-linux-gnu --target-dir target/fuzz -p p2pchat-fuzz \
  --test targets --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$exe" ] || { echo "fuzz/run.sh: the build failed; rerun without --message-format to see why" >&2; exit 1; }
corpus=fuzz/corpus/$target
crashes=fuzz/crashes/$target
mkdir -p "$corpus" "$crashes"
BOLERO_TEST_NAME=$target BOLERO_LIBTEST_HARNESS=1 \
BOLERO_LIBFUZZER_ARGS="$corpus $crashes -artifact_prefix=$crashes/ -max_total_time=$seconds -timeout=10 -print_final_stats=1" \
  "$exe" "$target" --exact --nocapture --quiet --test-threads 1
