//! Everything `vedette serve` would refuse in a config, found in one pass and before anything
//! is written to the data dir: the files the config names (certificates, keys, trusted pack
//! keys, packs, reference tables, sink CAs) exist, parse and fit together. `vedette validate`
//! prints the same report; [`crate::EngineHandle::start`] refuses to start on any problem.
//!
//! Not checked here: whether the listen ports are free (only binding tells, and a running
//! engine holds them) and whether remote destinations answer (sinks spool until they do).

use std::path::Path;
use std::sync::Arc;

use vedette_actors::tls::{self, PeerIdentity, RevocationCheck};
use vedette_config::{Config, Connector, Problem};
use vedette_pipelines::compile::Compiler;
use vedette_pipelines::rule::Pack;
use vedette_pipelines::signature::PublicKey;

use crate::pki::PkiPaths;

/// What a config would do to a start: problems refuse it, warnings are logged.
#[derive(Debug, Default)]
pub struct Report {
    /// Each stops `serve` (and makes `validate` exit 1).
    pub problems: Vec<Problem>,
    /// Started anyway, with what the warning says.
    pub warnings: Vec<Problem>,
}

impl Report {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }
}

/// Revocation is not a question at this stage: nothing connects.
struct NoneRevoked;

impl RevocationCheck for NoneRevoked {
    fn is_revoked(&self, _: &PeerIdentity) -> bool {
        false
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Checks a validated config's files for a start. Relative paths are resolved inside
/// `data_dir` first.
pub async fn check(config: &Config) -> Report {
    check_with(config, true).await
}

/// [`check`] for a running engine re-reading its config: a pack that does not apply is a
/// problem (the running rule set stays), not a warning.
pub async fn check_running(config: &Config) -> Report {
    check_with(config, false).await
}

async fn check_with(config: &Config, at_start: bool) -> Report {
    let mut config = config.clone();
    config.resolve_paths();
    let mut report = Report::default();
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        report.problem("data_dir", format!("{} exists and is not a directory", config.data_dir.display()));
    }
    ingest(&config, &mut report);
    api(&config, &mut report);
    rules(&config, &mut report, at_start).await;
    sinks(&config, &mut report);
    report
}

fn ingest(config: &Config, report: &mut Report) {
    let i = &config.ingest;
    // Without `ca_cert` the development CA (and its server certificate) is created or reused.
    let Some(ca) = &i.ca_cert else {
        if let (Some(cert), Some(key)) = (&i.server_cert, &i.server_key) {
            for (key_path, p) in [("ingest.server_cert", cert), ("ingest.server_key", key)] {
                if let Err(e) = read(p) {
                    report.problem(key_path, e);
                }
            }
        }
        return;
    };
    let pki = PkiPaths::new(&config.data_dir);
    let (cert, key, named) = match (&i.server_cert, &i.server_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), true),
        _ => (pki.server_cert.clone(), pki.server_key.clone(), false),
    };
    let ca_pem = read(ca).map_err(|e| report.problem("ingest.ca_cert", e)).ok();
    let where_ = |p: &Path| {
        if named { String::new() } else { format!(" (`ingest.server_cert` is unset, so {} is used)", p.display()) }
    };
    let cert_pem = read(&cert).map_err(|e| report.problem("ingest.server_cert", format!("{e}{}", where_(&cert)))).ok();
    let key_pem = read(&key).map_err(|e| report.problem("ingest.server_key", format!("{e}{}", where_(&key)))).ok();
    if let (Some(ca_pem), Some(cert_pem), Some(key_pem)) = (&ca_pem, &cert_pem, &key_pem)
        && let Err(e) = tls::server_config(
            ca_pem,
            cert_pem,
            key_pem,
            i.idle_timeout,
            i.receive_window_bytes,
            Arc::new(NoneRevoked),
            false,
        )
    {
        report.problem("ingest.server_cert", e.to_string());
    }
    if let (Some(_), Some(ca_key)) = (&ca_pem, &config.fleet.ca_key)
        && let Err(e) = crate::pki::CertPem::load(ca, ca_key)
    {
        report.problem("fleet.ca_key", e.to_string());
    }
}

fn api(config: &Config, report: &mut Report) {
    if let (Some(cert), Some(key)) = (&config.api.tls_cert, &config.api.tls_key)
        && let Err(e) = crate::api::listener::server_config(cert, key)
    {
        report.problem("api.tls_cert", e.to_string());
    }
}

async fn rules(config: &Config, report: &mut Report, at_start: bool) {
    let mut trusted = Vec::new();
    for (i, p) in config.rules.trusted_keys.iter().enumerate() {
        match read(p).and_then(|bytes| {
            let text = String::from_utf8(bytes).map_err(|_| format!("{} is not text", p.display()))?;
            PublicKey::from_text(&p.display().to_string(), &text).map_err(|e| e.to_string())
        }) {
            Ok(k) => trusted.push(k),
            Err(e) => report.problem(format!("rules.trusted_keys[{i}]"), e),
        }
    }
    let catalog = match crate::engine::build_catalog(config) {
        Ok(c) => Arc::new(c),
        Err(e) => return report.problem("tables", e.to_string()),
    };
    let refs = crate::reference::registry(config);
    for (i, def) in config.reference_tables.iter().enumerate() {
        if let Err(e) = crate::reference::load(config, &refs, def) {
            report.problem(format!("reference_tables[{i}].path"), e.to_string());
        }
    }
    // An engine that follows its upstream runs the upstream's packs, not a directory's.
    let Some(dir) = config.rules.packs_dir.as_ref().filter(|_| !config.rules.follow_upstream) else { return };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return report.problem("rules.packs_dir", format!("cannot read {}: {e}", dir.display())),
    };
    let compiler = match Compiler::with_references(catalog, refs) {
        Ok(c) => c,
        Err(e) => return report.problem("rules", e.to_string()),
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    // A start with a state dir falls back to the rule set applied last time when the packs
    // do not apply (docs/rules.md): their problems are warnings then.
    let fallback = at_start && config.data_dir.join("state").exists();
    let mut owners = std::collections::HashMap::new();
    if config.rules.builtin {
        owners.extend(Pack::builtin().rules.into_iter().map(|r| (r.id, "builtin".to_string())));
    }
    let mut pack_problems = Vec::new();
    for f in &files {
        let file = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                pack_problems.push(format!("cannot read {file}: {e}"));
                continue;
            }
        };
        // Every YAML and SQL problem of the pack, each at its line in the file.
        let (pack, problems) = vedette_pipelines::pack_check::check(&compiler, &file, &text).await;
        pack_problems.extend(problems.iter().map(|p| p.render(&file)));
        let Some(pack) = pack else { continue };
        if let Err(e) = crate::ruleset::check_signature(f, &pack, &trusted) {
            if config.rules.allow_unsigned {
                report.warnings.push(Problem {
                    path: "rules.allow_unsigned".into(),
                    message: format!("{file} is loaded without a valid signature: {e}"),
                });
            } else {
                pack_problems.push(format!("{file}: {e}"));
            }
        }
        for rule in &pack.rules {
            if let Some(other) = owners.insert(rule.id.clone(), pack.name.clone()) {
                pack_problems.push(format!("{file}: rule `{}`: id is used by pack `{other}` too", rule.id));
            }
        }
    }
    for message in pack_problems {
        let p = Problem { path: "rules.packs_dir".into(), message };
        if fallback {
            report.warnings.push(Problem {
                message: format!("{} (the engine starts with the rule set applied last time)", p.message),
                ..p
            });
        } else {
            report.problems.push(p);
        }
    }
}

fn sinks(config: &Config, report: &mut Report) {
    for (i, sink) in config.sinks.iter().enumerate() {
        let at = |key: &str| format!("sinks[{i}].{key}");
        match &sink.connector {
            Connector::Webhook(w) => {
                if let Err(e) = vedette_actors::sinks::http::client(sink.name(), w.timeout, w.tls_ca.as_deref()) {
                    report.problem(at("tls_ca"), e.to_string());
                }
            }
            Connector::Kafka(k) => {
                for (key, p) in [("tls_ca", &k.tls_ca), ("tls_cert", &k.tls_cert), ("tls_key", &k.tls_key)] {
                    if let Some(Err(e)) = p.as_ref().map(|p| read(p)) {
                        report.problem(at(key), e);
                    }
                }
            }
            Connector::Forward(f) => {
                let pems: Vec<_> = [("ca", &f.ca), ("cert", &f.cert), ("key", &f.key)]
                    .into_iter()
                    .map(|(key, p)| read(p).map_err(|e| report.problem(at(key), e)).ok())
                    .collect();
                if let [Some(ca), Some(cert), Some(key)] = &pems[..]
                    && let Err(e) = tls::client_config(ca, Some((cert, key)), vedette_schemas::frame::ALPN)
                {
                    report.problem(at("cert"), e.to_string());
                }
            }
            // A file sink's directory is the destination: missing or unwritable, it fails at
            // delivery and spools until it is fixed, like any destination that is down.
            Connector::File(_)
            | Connector::Stdout {}
            | Connector::SplunkHec(_)
            | Connector::Elasticsearch(_)
            | Connector::History {} => {}
        }
    }
}
