#!/usr/bin/env bash
# Kafka delivery checked by a client that is not librdkafka: the `kafka` sink against a tansu
# broker (in-memory storage) that is SIGKILLed for 20 s while a sensor keeps sending, then
# started again empty. `tansu cat consume` (tansu's own Kafka client) reads the topic before
# the kill and after the return; together they must hold every alert of the file sink exactly
# once. Prints how long the spool took to empty after the broker came back.
# Not part of `./run-tests.sh` (tests/kafka_tansu.rs covers the same in-process); run by hand
# after `cargo build -p vedette-engine --bin vedette`, as often as wanted:
#   for i in 1 2 3 4 5; do tests/scripts/kafka_broker_kill.sh; done
set -euo pipefail
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/vedette-target}/debug/vedette
K=19092; Q=17701; H=17781
W=$(mktemp -d)
cat > $W/vedette.toml <<CFG
data_dir = "$W/data"
[ingest]
listen = "127.0.0.1:$Q"
[api]
listen = "127.0.0.1:$H"
[[sinks]]
name = "kafka"
type = "kafka"
brokers = "127.0.0.1:$K"
topic = "alerts"
[[sinks]]
name = "file"
type = "file"
path = "alerts.jsonl"
CFG
broker() {
  tansu broker --listener-url tcp://127.0.0.1:$K --advertised-listener-url tcp://127.0.0.1:$K --storage-engine memory://tansu/ >/dev/null 2>&1 &
  BPID=$!
  until (echo > /dev/tcp/127.0.0.1/$K) 2>/dev/null; do sleep 0.05; done
  tansu topic create alerts --partitions 1 --broker tcp://127.0.0.1:$K >/dev/null
}
events() { python3 -c "
import json
for n in range($1,$2):
    print(json.dumps({'_table':'process_events','ts':1700000000000000+n,'event_type':'start','pid':n,'exe':'/usr/bin/cat','cmdline':f'cat /etc/shadow #{n}','user':'root'}))" > $W/ev.jsonl
  $BIN sensor --events $W/ev.jsonl --server 127.0.0.1:$Q --data-dir $W/data --log-format json >/dev/null 2>&1
}
spooled() { $BIN sinks list -o json --api http://127.0.0.1:$H --data-dir $W/data | python3 -c "import json,sys; print([s['spooled'] for s in json.load(sys.stdin) if s['name']=='kafka'][0])"; }
consume() { timeout 20 tansu cat consume alerts --broker tcp://127.0.0.1:$K --max-wait-time-ms 1000 > $1 2>/dev/null || true; }
broker
$BIN serve --config $W/vedette.toml --log-format json 2> $W/serve.log &
SPID=$!
trap 'kill -9 $SPID $BPID 2>/dev/null || true; rm -rf "$W"' EXIT
until curl -fsS http://127.0.0.1:$H/health/ready >/dev/null 2>&1; do sleep 0.1; done
events 1 201
until [ "$(spooled)" = 0 ]; do sleep 0.2; done
consume $W/a.out
kill -9 $BPID; wait $BPID 2>/dev/null || true
T0=$(date +%s.%N)
events 201 401
sleep $(python3 -c "import time; print(max(0, 20 - (time.time() - $T0)))")
SP=$(spooled)
broker
T1=$(date +%s.%N)
until [ "$(spooled)" = 0 ]; do sleep 0.1; done
T2=$(date +%s.%N)
events 401 601
until [ "$(spooled)" = 0 ]; do sleep 0.2; done
consume $W/b.out
python3 - $W $SP $T1 $T2 <<'PY'
import json, sys, re
w, sp, t1, t2 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def ids(path):
    out = []
    for line in open(path):
        for m in re.finditer(r'"alert_id"\s*:\s*"([0-9a-f-]{36})"', line.replace('\\"', '"')):
            out.append(m.group(1))
    return out
a, b = ids(f"{w}/a.out"), ids(f"{w}/b.out")
f = [json.loads(l)["alert_id"] for l in open(f"{w}/data/alerts.jsonl")]
print(f"file sink {len(f)} alerts; kafka before kill {len(a)}, after restart {len(b)}; "
      f"spooled during outage {sp}; spool empty {t2-t1:.1f} s after the broker came back")
assert len(f) == 600, len(f)
assert len(set(f)) == 600
assert sorted(a + b) == sorted(f), (len(set(a + b) ^ set(f)), len(a + b))
print("OK: every alert in Kafka exactly once")
PY
