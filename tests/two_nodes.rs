//! Two vedette processes on 127.0.0.1: an edge that detects and forwards (`forward` sink,
//! `route = "hybrid"` for Elasticsearch and Splunk HEC) and a central node delivering to the
//! same Elasticsearch and HEC receivers. Every alert reaches each destination exactly once,
//! and the central node has every alert, marked with the edge that sent it — also after the
//! edge ↔ central path was cut for longer than the idle timeout (a UDP relay that drops
//! everything), while the edge kept delivering directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vedette_engine::pki;
use vedette_engine::sensor::{self, Event, SensorStats};
use vedette_tests::child::{Killed, engine_child_main, free_port, spawn_engine};
use vedette_tests::receivers::{Elasticsearch, Hec};
use vedette_tests::relay::Relay;
use vedette_tests::{eventually, http_call, read_alerts, sensor_config, shadow_cat};

#[test]
#[ignore = "started by the two-node tests as their engines"]
fn engine_child() {
    engine_child_main();
}

struct Node {
    dir: tempfile::TempDir,
    quic: u16,
    api: u16,
    _process: Killed,
}

impl Node {
    /// The detections in the node's file sink (fleet-health alerts left out).
    fn alerts(&self) -> Vec<Value> {
        self.all_alerts().into_iter().filter(|a| a["rule_id"] == "linux.shadow_in_cmdline").collect()
    }

    fn all_alerts(&self) -> Vec<Value> {
        read_alerts(&self.dir.path().join("alerts.jsonl"))
    }

    async fn sink(&self, name: &str) -> Value {
        let token = std::fs::read_to_string(self.dir.path().join("admin.token")).unwrap();
        let addr = format!("127.0.0.1:{}", self.api).parse().unwrap();
        let r = http_call(addr, "GET", "/api/v1/sinks", Some(token.trim()), None).await;
        r.json().as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
    }
}

fn node_config(dir: &Path, quic: u16, api: u16, extra: &str, sinks: &str) -> PathBuf {
    let text = format!(
        "data_dir = \"{}\"\n[ingest]\nlisten = \"127.0.0.1:{quic}\"\nheartbeat_interval = \"500ms\"\nidle_timeout = \"2s\"\n\
         [pipeline]\nbatch_linger = \"10ms\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n{extra}\n{sinks}",
        dir.display()
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn fast(name: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\nbatch = {{ linger = \"5ms\" }}\nretry = {{ base = \"50ms\", cap = \"500ms\" }}\nbreaker = {{ open_for = \"500ms\" }}\n"
    )
}

/// Central (ES, HEC, file) and edge (ES and HEC hybrid, file, forward through a relay).
async fn two_nodes(es: &str, hec: &str) -> (Node, Node, Relay) {
    two_nodes_with(es, hec, |_| String::new(), |_| String::new()).await
}

/// [`two_nodes`] with extra config sections for each node (given its data dir), written
/// before the nodes start.
async fn two_nodes_with(
    es: &str,
    hec: &str,
    central_extra: impl FnOnce(&Path) -> String,
    edge_extra: impl FnOnce(&Path) -> String,
) -> (Node, Node, Relay) {
    let shared = format!(
        "{}type = \"elasticsearch\"\nurl = \"{es}\"\nindex = \"alerts\"\nROUTE\n{}type = \"splunk_hec\"\nurl = \"{hec}\"\ntoken = \"test-token\"\nROUTE\n",
        fast("es"),
        fast("hec")
    );
    let file = "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\nbatch = { linger = \"5ms\" }\n";
    let central_dir = tempfile::tempdir().unwrap();
    let (quic, api) = (free_port(true), free_port(false));
    let extra = central_extra(central_dir.path());
    let config = node_config(central_dir.path(), quic, api, &extra, &(shared.replace("ROUTE\n", "") + file));
    let process = Killed(spawn_engine(&config, api));
    let central = Node { dir: central_dir, quic, api, _process: process };
    // The edge's certificate comes from the central node's CA, with the edge tenant.
    pki::issue_sensor_files(central.dir.path(), "edge-1", "vedette-edge", 30, false, None).unwrap();
    let (cert, key) = pki::PkiPaths::new(central.dir.path()).sensor("edge-1");
    let ca = pki::PkiPaths::new(central.dir.path()).ca_cert;
    let relay = Relay::start(format!("127.0.0.1:{quic}").parse().unwrap()).await;
    let forward = format!(
        "{}type = \"forward\"\nserver = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nack_timeout = \"2s\"\n",
        fast("central"),
        relay.addr,
        ca.display(),
        cert.display(),
        key.display()
    );
    let edge_dir = tempfile::tempdir().unwrap();
    let (quic, api) = (free_port(true), free_port(false));
    let sinks = shared.replace("ROUTE\n", "route = \"hybrid\"\n") + file + &forward;
    let extra = edge_extra(edge_dir.path());
    let config = node_config(edge_dir.path(), quic, api, &extra, &sinks);
    let process = Killed(spawn_engine(&config, api));
    let edge = Node { dir: edge_dir, quic, api, _process: process };
    (central, edge, relay)
}

/// Sends `events` stateless detections (numbered from `first`) from a sensor of the edge.
async fn detections(edge: &Node, first: i64, events: i64) {
    let cfg = sensor_config(edge.dir.path(), format!("127.0.0.1:{}", edge.quic).parse().unwrap(), "s-1", "acme");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    for n in first..first + events {
        tx.send(Event { table: "process_events".into(), row: shadow_cat(n) }).await.unwrap();
    }
    drop(tx);
    let run = sensor::run(cfg, rx, Arc::new(SensorStats::default()));
    tokio::time::timeout(Duration::from_secs(30), run).await.expect("sensor finishes").expect("sensor succeeds");
}

/// Detections by command line (each detection's identity here) → how many times; the central
/// node's fleet-health alerts about the edge (silent during a cut) are left out.
fn tally(alerts: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in alerts.iter().filter(|a| a["rule_id"] == "linux.shadow_in_cmdline") {
        *out.entry(a["row"]["cmdline"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    out
}

fn expected(events: i64) -> BTreeMap<String, usize> {
    (0..events).map(|n| (shadow_cat(n)["cmdline"].as_str().unwrap().to_string(), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_routing_delivers_every_alert_once_to_each_destination() {
    let (es, hec) = (Elasticsearch::default(), Hec::default());
    let (es_url, hec_url) = (es.start().await, hec.start().await);
    let (central, edge, _relay) = two_nodes(&es_url, &hec_url).await;
    const N: i64 = 40;
    detections(&edge, 0, N).await;

    let all = || {
        central.alerts().len() >= N as usize && es.documents().len() >= N as usize && hec.events().len() >= N as usize
    };
    assert!(
        eventually(Duration::from_secs(30), all).await,
        "central {}, es {}, hec {}",
        central.alerts().len(),
        es.documents().len(),
        hec.events().len()
    );
    // Both nodes send to Elasticsearch (`hybrid`): the second copy of each alert is a 409.
    assert!(
        eventually(Duration::from_secs(10), || *es.conflicts.lock().unwrap() >= N as u64).await,
        "conflicts {}",
        es.conflicts.lock().unwrap()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tally(&es.documents()), expected(N), "Elasticsearch: each alert once");
    assert_eq!(
        tally(&hec.events()),
        expected(N),
        "HEC: each alert once (the edge claimed it; the central node skipped it)"
    );
    assert_eq!(*es.conflicts.lock().unwrap(), N as u64, "each alert reached Elasticsearch from both nodes");
    let at_central = central.alerts();
    assert_eq!(tally(&at_central), expected(N), "the central node has every alert once");
    assert!(at_central.iter().all(|a| a["edge"] == "edge-1" && a["tenant"] == "acme"), "{:?}", at_central[0]);
    assert!(edge.alerts().iter().all(|a| a.get("edge").is_none()), "the edge's own alerts are local detections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_spools_the_forward_sink_while_direct_sinks_deliver_then_everything_arrives_once() {
    let (es, hec) = (Elasticsearch::default(), Hec::default());
    let (es_url, hec_url) = (es.start().await, hec.start().await);
    let (central, edge, relay) = two_nodes(&es_url, &hec_url).await;
    detections(&edge, 0, 10).await;
    assert!(eventually(Duration::from_secs(30), || central.alerts().len() >= 10).await, "link works before the cut");

    relay.cut(true);
    const N: i64 = 50;
    detections(&edge, 10, N - 10).await;
    // Direct delivery goes on during the cut.
    assert!(
        eventually(Duration::from_secs(20), || es.documents().len() >= N as usize && hec.events().len() >= N as usize)
            .await,
        "es {}, hec {}",
        es.documents().len(),
        hec.events().len()
    );
    // Longer than both idle timeouts (2 s): the forward sink spools and reports the failure.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(central.alerts().len(), 10, "nothing crosses a cut link");
    let silent =
        central.all_alerts().into_iter().any(|a| a["rule_id"] == "vedette.sensor_silent" && a["sensor_id"] == "edge-1");
    assert!(silent, "the central node reports the edge silent");
    let forward = edge.sink("central").await;
    assert_eq!(forward["spooled"], (N - 10) as u64, "{forward}");
    assert!(forward["last_error"].is_string(), "{forward}");

    relay.cut(false);
    assert!(
        eventually(Duration::from_secs(30), || central.alerts().len() >= N as usize).await,
        "central {}",
        central.alerts().len()
    );
    assert!(eventually(Duration::from_secs(10), || *es.conflicts.lock().unwrap() >= N as u64).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tally(&central.alerts()), expected(N), "after the link heals, every alert arrives once");
    assert_eq!(tally(&es.documents()), expected(N));
    assert_eq!(tally(&hec.events()), expected(N));
    assert_eq!(edge.sink("central").await["spooled"], 0);
}

const TEAM: &str = "name: team\nversion: VERSION\ndescription: d\nauthor: a\nrules:\n  - id: team.passwd\n    name: passwd\n    \
                    severity: medium\n    sql: SELECT user, cmdline FROM process_events WHERE cmdline LIKE '%/etc/passwd%'\n";

/// Writes `team.yaml` version `version` into `dir`, signed with `key`.
fn signed_team_pack(dir: &Path, version: u32, key: &vedette_pipelines::signature::SecretKey) {
    let text = TEAM.replace("VERSION", &version.to_string());
    let pack = vedette_pipelines::rule::Pack::from_yaml("team.yaml", &text).unwrap();
    std::fs::write(dir.join("team.yaml"), &text).unwrap();
    std::fs::write(dir.join("team.yaml.sig"), key.sign(&pack)).unwrap();
}

/// The rule set an edge reported to the central node (`rules` of its registry record).
async fn edge_rules(central: &Node) -> Value {
    let token = std::fs::read_to_string(central.dir.path().join("admin.token")).unwrap();
    let addr = format!("127.0.0.1:{}", central.api).parse().unwrap();
    http_call(addr, "GET", "/api/v1/sensors/edge-1", Some(token.trim()), None).await.json()["rules"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_follows_its_upstreams_rules_verifying_them_with_its_own_keys() {
    use vedette_pipelines::signature::SecretKey;
    let (trusted, other) = (SecretKey::from_seed([7; 32]), SecretKey::from_seed([9; 32]));
    let (es, hec) = (Elasticsearch::default(), Hec::default());
    let (es_url, hec_url) = (es.start().await, hec.start().await);
    let central_rules = |dir: &Path| {
        let packs = dir.join("packs");
        std::fs::create_dir_all(&packs).unwrap();
        signed_team_pack(&packs, 1, &trusted);
        std::fs::write(dir.join("trusted.pub"), trusted.public().to_text()).unwrap();
        std::fs::write(dir.join("other.pub"), other.public().to_text()).unwrap();
        "[rules]\npacks_dir = \"packs\"\ntrusted_keys = [\"trusted.pub\", \"other.pub\"]\n".to_string()
    };
    // The edge trusts only the first key, and has no packs of its own.
    let edge_rules_config = |dir: &Path| {
        std::fs::write(dir.join("trusted.pub"), trusted.public().to_text()).unwrap();
        "[rules]\nfollow_upstream = true\ntrusted_keys = [\"trusted.pub\"]\n".to_string()
    };
    let (central, edge, _relay) = two_nodes_with(&es_url, &hec_url, central_rules, edge_rules_config).await;

    // The edge applies the central node's set and says so.
    let synced = || async { edge_rules(&central).await };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reported = loop {
        let r = synced().await;
        if r["packs"].as_array().is_some_and(|p| p.iter().any(|p| p[0] == "team"))
            || tokio::time::Instant::now() > deadline
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reported["packs"], serde_json::json!([["builtin-linux", 1], ["team", 1]]), "{reported}");
    assert!(reported["error"].is_null(), "{reported}");
    // The synced rule runs on the edge.
    let cfg = sensor_config(edge.dir.path(), format!("127.0.0.1:{}", edge.quic).parse().unwrap(), "s-1", "acme");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let row = serde_json::json!({"ts": chrono::Utc::now().timestamp_micros(), "event_type": "start", "pid": 1,
                                 "exe": "/usr/bin/cat", "cmdline": "cat /etc/passwd", "user": "dev"});
    tx.send(Event { table: "process_events".into(), row }).await.unwrap();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), sensor::run(cfg, rx, Arc::new(SensorStats::default())))
        .await
        .unwrap()
        .unwrap();
    let on_edge = || edge.all_alerts().iter().any(|a| a["rule_id"] == "team.passwd");
    assert!(eventually(Duration::from_secs(10), on_edge).await, "the edge runs the upstream's rule");
    // A local apply on the edge is refused: its rules come from the upstream.
    let token = std::fs::read_to_string(edge.dir.path().join("admin.token")).unwrap();
    let addr = format!("127.0.0.1:{}", edge.api).parse().unwrap();
    let r = http_call(addr, "POST", "/api/v1/rules/apply", Some(token.trim()), Some(b"{}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("follow_upstream"), "{}", r.body);

    // Version 2, signed with a key the central node trusts but the edge does not: the edge
    // refuses it, keeps version 1, and the central node shows why.
    signed_team_pack(&central.dir.path().join("packs"), 2, &other);
    let token = std::fs::read_to_string(central.dir.path().join("admin.token")).unwrap();
    let addr = format!("127.0.0.1:{}", central.api).parse().unwrap();
    let r = http_call(addr, "POST", "/api/v1/rules/apply", Some(token.trim()), Some(b"{}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let r = synced().await;
        if r["error"].is_string() || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused["error"].as_str().unwrap_or_default().contains("team"), "{refused}");
    assert_eq!(refused["packs"], serde_json::json!([["builtin-linux", 1], ["team", 1]]), "the edge keeps version 1");
}
