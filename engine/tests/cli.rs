//! The `vedette` binary as an operator uses it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vedette");

#[test]
fn validate_reports_every_problem_with_its_key_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[ingest]\nlisten = \"nowhere\"\n[pipeline]\nbatch_rows = 0\n[[sinks]]\nname = \"x\"\ntype = \"telegram\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["validate", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest.listen"), "{err}");
    assert!(err.contains("sinks[0].type"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[api]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = Command::new(BIN).args(["validate", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_with_no_config_runs_the_demo_and_shuts_down_gracefully_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let mut serve = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .env("VEDETTE__INGEST__LISTEN", format!("\"127.0.0.1:{quic}\""))
        .env("VEDETTE__API__LISTEN", format!("\"127.0.0.1:{http}\""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sensor = Command::new(BIN)
        .args(["sensor", "--demo", "--no-proc", "--server", &format!("127.0.0.1:{quic}"), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(sensor.status.success(), "{}", String::from_utf8_lossy(&sensor.stderr));
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert_eq!(alerts.lines().count(), 10, "{alerts}");
    assert!(Command::new("kill").args(["-INT", &serve.id().to_string()]).status().unwrap().success());
    let status = serve.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut stdout = String::new();
    serve.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert_eq!(stdout.lines().filter(|l| l.contains("linux.")).count(), 10, "{stdout}");
    let mut stderr = String::new();
    serve.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("Shutdown complete."), "{stderr}");
}
