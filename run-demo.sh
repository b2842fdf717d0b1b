#!/usr/bin/env bash
# Builds vedette, starts `vedette serve` on its embedded default config (QUIC 127.0.0.1:7700,
# HTTP 127.0.0.1:7780, data in ./vedette-data), then runs the reference sensor with the
# scripted attack scenario (and live /proc process events). Alerts print below; Ctrl-C stops.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vedette-target}"
.ci/system-deps
cargo build -p vedette-engine --bin vedette
bin="$CARGO_TARGET_DIR/debug/vedette"
"$bin" serve &
serve_pid=$!
trap 'kill -INT "$serve_pid" "${sensor_pid:-}" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:7780/health/ready >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$bin" sensor --demo &
sensor_pid=$!
echo "vedette is running: alerts above/below, JSON in ./vedette-data/alerts.jsonl," >&2
echo "metrics at http://127.0.0.1:7780/metrics. API token in ./vedette-data/admin.token:" >&2
echo "  web console: http://127.0.0.1:7780/ui/ — log in with this token (admin; keep it secret):" >&2
echo "    $(cat vedette-data/admin.token 2>/dev/null || echo '(not written yet: see ./vedette-data/admin.token)')" >&2
echo "  $bin tail          # live alerts from the API (another terminal)" >&2
echo "  $bin alerts query  # the alert history. Ctrl-C to stop." >&2
wait "$serve_pid"
