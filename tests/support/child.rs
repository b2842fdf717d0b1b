//! Engines in child processes, so a test can SIGKILL them or run several nodes: the test
//! binary starts itself again with `VEDETTE_CHILD_CONFIG` set, running only its ignored test
//! `engine_child`, which calls [`engine_child_main`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The body of a test binary's `engine_child` test: runs the engine of the config file named
/// by `VEDETTE_CHILD_CONFIG` until killed; does nothing when it is unset.
pub fn engine_child_main() {
    let Ok(path) = std::env::var("VEDETTE_CHILD_CONFIG") else { return };
    let text = std::fs::read_to_string(path).expect("child config");
    let config = vedette_config::Config::from_toml_str(&text).expect("child config is valid");
    if let Ok(filter) = std::env::var("VEDETTE_TEST_LOG") {
        let _ =
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let _engine = vedette_engine::EngineHandle::start(config).await.expect("engine starts");
        // Runs until the test kills this process.
        std::future::pending::<()>().await;
    });
}

/// Starts the engine of `config` in a child process; returns once its API answers on
/// `api_port`. `VEDETTE_TEST_LOG` shows the child's log on stderr.
pub fn spawn_engine(config: &Path, api_port: u16) -> Child {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "engine_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("VEDETTE_CHILD_CONFIG", config)
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("VEDETTE_TEST_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        })
        .spawn()
        .expect("engine child starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        assert!(Instant::now() < deadline, "engine child did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A free loopback port (UDP or TCP).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    }
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
