//! The fleet as `docs/fleet.md` tells a newcomer to run it, through the `vedette` binary and
//! `openssl`: enroll a sensor with a token and the CA's fingerprint, send events from a file,
//! list and command it; bring your own CA (made with openssl) for the engine and sensors.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn sh(program: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program).args(args).current_dir(cwd).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

fn vedette(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(BIN).args(args).current_dir(cwd).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const EVENTS: &str = r#"{"_table":"process_events","event_type":"start","pid":4242,"exe":"/usr/bin/cat","cmdline":"cat /etc/shadow","user":"root"}
{"_table":"auth_events","user":"root","src_ip":"203.0.113.9","service":"ssh","method":"password","outcome":"failure"}
"#;

#[test]
fn a_newcomer_enrolls_a_sensor_sends_events_from_a_file_and_commands_it() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let mut serve = KillOnDrop(serve(dir.path(), quic, http, &[], &[], false));
    let d = dir.path().to_str().unwrap();
    let api = format!("http://127.0.0.1:{http}");

    let (ok, out) =
        vedette_cmd(dir.path(), http, "tokens", &["create-enrollment", "--tenant", "acme", "--label", "env=lab"]);
    assert!(ok, "{out}");
    let token = out.lines().next().unwrap().trim().to_string();
    assert!(token.starts_with("vde_"), "{out}");
    // The CA fingerprint as the docs get it.
    let fp =
        sh("openssl", &["x509", "-noout", "-fingerprint", "-sha256", "-in", &format!("{d}/ca/ca.pem")], dir.path());
    let fp = fp.trim().split_once('=').unwrap().1.to_string();

    let sensor_dir = tempfile::tempdir().unwrap();
    let s = sensor_dir.path().to_str().unwrap();
    let server = format!("127.0.0.1:{quic}");
    let enroll = ["sensor", "enroll", "--server", &server, "--token", &token, "--ca-sha256", &fp, "--data-dir", s];
    let (ok, out) = vedette(&[&enroll[..], &["--sensor-id", "lab-01"]].concat(), sensor_dir.path());
    assert!(ok && out.contains("enrolled as lab-01 (tenant acme)"), "{out}");
    let (ok, out) = vedette(&[&enroll[..], &["--sensor-id", "lab-02", "--force"]].concat(), sensor_dir.path());
    assert!(!ok && out.contains("used up"), "a one-use token enrolls one sensor: {out}");

    let events = sensor_dir.path().join("events.jsonl");
    std::fs::write(&events, EVENTS).unwrap();
    let (ok, out) = vedette(&["sensor", "--data-dir", s, "--events", events.to_str().unwrap()], sensor_dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("sent 2 event(s)") && out.contains("0 row(s) rejected"), "{out}");
    let (ok, bad) = {
        std::fs::write(&events, "{\"user\":\"x\"}\n").unwrap();
        vedette(&["sensor", "--data-dir", s, "--events", events.to_str().unwrap()], sensor_dir.path())
    };
    assert!(!ok && bad.contains("line 1") && bad.contains("_table"), "{bad}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["query", "--json", "--sensor", "lab-01"]);
        if ok && out.contains("linux.shadow_in_cmdline") {
            assert!(out.contains("\"tenant\":\"acme\""), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "no alert from the enrolled sensor: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["list", "--label", "env=lab"]);
    assert!(ok && out.contains("lab-01") && out.contains("acme"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["set-level", "minimal", "--sensor", "lab-01"]);
    assert!(ok && out.contains("1 command(s) queued, 0 sent now"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["commands", "lab-01"]);
    assert!(ok && out.contains("set_level") && out.contains("pending"), "{out}");
    // The sensor picks it up when it next runs.
    std::fs::write(&events, "").unwrap();
    let (ok, out) = vedette(&["sensor", "--data-dir", s, "--events", events.to_str().unwrap()], sensor_dir.path());
    assert!(ok, "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["show", "lab-01"]);
    assert!(ok && out.contains("\"observe_level\": \"minimal\""), "{out}");
    let (ok, out) = vedette(&["tokens", "list-enrollment", "--api", &api, "--data-dir", d], dir.path());
    assert!(ok && out.contains("1/1") && out.contains("env=lab"), "{out}");

    assert!(Command::new("kill").args(["-INT", &serve.0.id().to_string()]).status().unwrap().success());
    assert!(serve.0.wait().unwrap().success());
}

/// The openssl commands of docs/fleet.md ("Bring your own CA"), run as written there.
fn byo_ca(dir: &Path) {
    let openssl = |args: &[&str]| sh("openssl", args, dir);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Example fleet CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=vedette engine",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "397",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    std::fs::write(
        dir.join("sensor.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "web-01.key",
        "-out",
        "web-01.csr",
        "-subj",
        "/OU=acme/CN=web-01",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "web-01.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "sensor.ext",
        "-out",
        "web-01.pem",
    ]);
}

#[test]
fn an_engine_on_an_openssl_ca_takes_openssl_and_ca_sign_certificates_and_enrolls() {
    let pki = tempfile::tempdir().unwrap();
    byo_ca(pki.path());
    let p = |f: &str| pki.path().join(f).display().to_string();
    // A CSR made elsewhere (key stays there), signed by `vedette ca sign` with that CA.
    sh(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "db-01.key",
            "-out",
            "db-01.csr",
            "-subj",
            "/CN=db-01",
        ],
        pki.path(),
    );
    let (ok, out) = vedette(
        &[
            "ca",
            "sign",
            &p("db-01.csr"),
            "--tenant",
            "acme",
            "--ca-cert",
            &p("ca.pem"),
            "--ca-key",
            &p("ca.key"),
            "--out",
            &p("db-01.pem"),
        ],
        pki.path(),
    );
    assert!(ok && out.contains("sensor db-01 (tenant acme)"), "{out}");
    let (ok, out) = vedette(
        &["ca", "sign", &p("web-01.csr"), "--tenant", "globex", "--ca-cert", &p("ca.pem"), "--ca-key", &p("ca.key")],
        pki.path(),
    );
    assert!(!ok && out.contains("tenant (OU) `acme`"), "a CSR cannot choose its tenant: {out}");

    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let (ca, cert, key, ca_key) = (p("ca.pem"), p("server.pem"), p("server.key"), p("ca.key"));
    let env = [
        ("VEDETTE__INGEST__CA_CERT", ca.as_str()),
        ("VEDETTE__INGEST__SERVER_CERT", cert.as_str()),
        ("VEDETTE__INGEST__SERVER_KEY", key.as_str()),
        ("VEDETTE__FLEET__CA_KEY", ca_key.as_str()),
    ];
    let mut serve = KillOnDrop(serve(dir.path(), quic, http, &env, &[], false));
    assert!(!dir.path().join("ca/ca.key").exists(), "no development CA with a configured one");
    let events = pki.path().join("events.jsonl");
    std::fs::write(&events, EVENTS).unwrap();
    let server = format!("127.0.0.1:{quic}");
    for id in ["web-01", "db-01"] {
        let args = ["sensor", "--server", &server, "--sensor-id", id, "--ca", &ca];
        let (c, k) = (p(&format!("{id}.pem")), p(&format!("{id}.key")));
        let (ok, out) = vedette(
            &[&args[..], &["--cert", &c, "--key", &k, "--events", events.to_str().unwrap()]].concat(),
            pki.path(),
        );
        assert!(ok && out.contains("sent 2 event(s)"), "{id}: {out}");
    }
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["list", "--tenant", "acme"]);
    assert!(ok && out.contains("web-01") && out.contains("db-01"), "{out}");
    // Enrollment signs with the configured CA's key.
    let (ok, out) = vedette_cmd(dir.path(), http, "tokens", &["create-enrollment", "--tenant", "acme"]);
    assert!(ok, "{out}");
    let token = out.lines().next().unwrap().trim().to_string();
    let fp = sh("openssl", &["x509", "-noout", "-fingerprint", "-sha256", "-in", &ca], pki.path());
    let sensor_dir = tempfile::tempdir().unwrap();
    let (ok, out) = vedette(
        &[
            "sensor",
            "enroll",
            "--server",
            &server,
            "--token",
            &token,
            "--ca-sha256",
            fp.trim(),
            "--sensor-id",
            "app-01",
            "--data-dir",
            sensor_dir.path().to_str().unwrap(),
        ],
        pki.path(),
    );
    assert!(ok && out.contains("enrolled as app-01"), "{out}");
    assert!(Command::new("kill").args(["-INT", &serve.0.id().to_string()]).status().unwrap().success());
    assert!(serve.0.wait().unwrap().success());
}
