//! Helpers shared by the binary's tests: loopback ports, a served engine, CLI calls.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vedette");

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `vedette serve ARGS` on loopback ports with extra env overrides; returns once the API
/// answers. `capture`: keep stdout and stderr for the test to read.
pub fn serve(
    dir: &std::path::Path,
    quic: u16,
    http: u16,
    env: &[(&str, &str)],
    args: &[&str],
    capture: bool,
) -> std::process::Child {
    let out = || if capture { Stdio::piped() } else { Stdio::null() };
    let child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("VEDETTE__INGEST__LISTEN", format!("\"127.0.0.1:{quic}\""))
        .env("VEDETTE__API__LISTEN", format!("\"127.0.0.1:{http}\""))
        .envs(env.iter().copied())
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

pub fn demo_sensor(dir: &std::path::Path, quic: u16) -> std::process::Output {
    Command::new(BIN)
        .args(["sensor", "--demo", "--no-proc", "--server", &format!("127.0.0.1:{quic}"), "--data-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

pub fn vedette_api(dir: &std::path::Path, http: u16, args: &[&str]) -> (bool, String) {
    vedette_cmd(dir, http, "rules", args)
}

/// `vedette COMMAND ARGS --api … --data-dir DIR` against the engine on `http` (the CLI uses
/// the engine's local admin token from DIR): (success, stdout + stderr).
pub fn vedette_cmd(dir: &std::path::Path, http: u16, command: &str, args: &[&str]) -> (bool, String) {
    let api = format!("http://127.0.0.1:{http}");
    let out = Command::new(BIN).arg(command).args(args).args(["--api", &api, "--data-dir"]).arg(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves no engine behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
