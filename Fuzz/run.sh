#!/bin/sh
# Long mutation-fuzzing run of the wire decoder and codecs (the same test that
# `swift test` runs for ~2 s), in a release build for more cases per second.
#   Fuzz/run.sh [SECONDS] [SEED]
# A failure prints the seed and iteration; rerun with that seed to reproduce.
set -eu
cd "$(dirname "$0")/.."
export WIRE_FUZZ_SECONDS="${1:-300}"
export WIRE_FUZZ_SEED="${2:-$(date +%s)}"
echo "fuzzing for ${WIRE_FUZZ_SECONDS}s with seed ${WIRE_FUZZ_SEED}"
exec swift test -c release --filter 'MigrationWireTests.FuzzTests/mutatedStreamsFailOnlyWithWireErrors'
