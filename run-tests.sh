#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages for librdkafka's build, the test tools
# (the tansu broker the end-to-end Kafka test starts, schemathesis for the API contract test;
# installed once, in parallel with the workspace build), then `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")"
.ci/system-deps
log="$(mktemp)"
.ci/test-tools >"$log" 2>&1 &
tools=$!
cargo test --workspace --no-run
if ! wait "$tools"; then
  cat "$log" >&2
  echo "installing the test tools failed (see above)" >&2
  exit 1
fi
rm -f "$log"
cargo test --workspace
