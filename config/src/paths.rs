//! Relative paths in a config are inside `data_dir` (itself relative to the working directory
//! of the process). [`Config::resolve_paths`] makes every one of them absolute in one place, so
//! each part of the engine reads the same file the operator meant.

use std::path::{Path, PathBuf};

use crate::{Config, Connector};

fn inside(data_dir: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = data_dir.join(&*p);
    }
}

fn inside_opt(data_dir: &Path, p: &mut Option<PathBuf>) {
    if let Some(p) = p {
        inside(data_dir, p);
    }
}

impl Config {
    /// Makes `data_dir` absolute (a relative one is relative to the working directory) and
    /// joins every relative file path of the config to it. Idempotent: every resolved path is
    /// absolute, so nothing is joined twice (with a relative `data_dir`, a second call used to
    /// make `vedette-data/vedette-data/alerts.jsonl`).
    pub fn resolve_paths(&mut self) {
        if let Ok(abs) = std::path::absolute(&self.data_dir) {
            self.data_dir = abs;
        }
        let d = self.data_dir.clone();
        inside_opt(&d, &mut self.ingest.ca_cert);
        inside_opt(&d, &mut self.ingest.server_cert);
        inside_opt(&d, &mut self.ingest.server_key);
        inside_opt(&d, &mut self.api.tls_cert);
        inside_opt(&d, &mut self.api.tls_key);
        inside_opt(&d, &mut self.fleet.ca_key);
        inside_opt(&d, &mut self.rules.packs_dir);
        self.rules.trusted_keys.iter_mut().for_each(|p| inside(&d, p));
        self.reference_tables.iter_mut().for_each(|r| inside(&d, &mut r.path));
        for sink in &mut self.sinks {
            match &mut sink.connector {
                Connector::File(f) => inside(&d, &mut f.path),
                Connector::Webhook(w) => inside_opt(&d, &mut w.tls_ca),
                Connector::Kafka(k) => {
                    inside_opt(&d, &mut k.tls_ca);
                    inside_opt(&d, &mut k.tls_cert);
                    inside_opt(&d, &mut k.tls_key);
                }
                Connector::Forward(f) => {
                    inside(&d, &mut f.ca);
                    inside(&d, &mut f.cert);
                    inside(&d, &mut f.key);
                }
                Connector::Stdout {}
                | Connector::SplunkHec(_)
                | Connector::Elasticsearch(_)
                | Connector::History {} => {}
            }
        }
    }
}
