//! `vedette`: the command-line entry point.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use vedette_config::Config;
use vedette_engine::pki;
use vedette_engine::reference::RefStatus;
use vedette_engine::ruleset::{ApplyReport, RulesStatus};
use vedette_engine::{EngineHandle, rules_cli};

/// mimalloc instead of glibc's malloc: the engine allocates per frame and per batch on many
/// threads, and glibc's malloc/free took ~18 % of its time at full load (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use cli::alerts::{AlertFilter, AlertsCommand};
use cli::client::{ApiArgs, api_call};
use cli::table::{OutputArgs, Table};
use cli::tokens::TokensCommand;

#[derive(Parser)]
#[command(name = "vedette", version, about = "Real-time detection engine for security sensor fleets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr (overrides `log.format`): `pretty` (coloured only on a
    /// terminal with `NO_COLOR` unset) or `json` (one object per line).
    #[arg(long, global = true, value_parser = ["pretty", "json"])]
    log_format: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (embedded default config unless --config is given).
    Serve {
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check a config the way `serve` would (environment overrides, the files it names, its
    /// packs and reference tables) and report every problem with its key path; writes nothing.
    Validate {
        /// TOML config file (the embedded default when not given).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `data_dir`, as for `serve`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the reference sensor; `vedette sensor enroll` obtains its certificate with a token.
    #[command(args_conflicts_with_subcommands = true)]
    Sensor {
        #[command(subcommand)]
        action: Option<cli::sensor::SensorAction>,
        #[command(flatten)]
        run: cli::sensor::RunArgs,
    },
    /// Rule pack tooling for analysts.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// A live view of a running engine, refreshed every interval: events/s per table, rule
    /// evaluations and alerts per rule, late rows, sinks' delivery rate, backlog and breaker.
    Top(cli::top::TopArgs),
    /// Make a running engine re-read its config file (as SIGHUP does): log level, API rate
    /// limits, packs and reference table files change at once; any other change is refused,
    /// naming the keys that need a restart.
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Sinks of a running engine: delivery state, spool, breaker.
    Sinks {
        #[command(subcommand)]
        command: SinksCommand,
    },
    /// Dead-letter queues of a running engine's sinks (alerts a destination refused).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Reference tables of a running engine (IOC lists …).
    Reference {
        #[command(subcommand)]
        command: ReferenceCommand,
    },
    /// Ed25519 keys for signing rule packs.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Fleet CA tooling.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// The fleet registry of a running engine: list, show, revoke, deregister.
    Sensors {
        #[command(subcommand)]
        command: cli::sensors::SensorsCommand,
    },
    /// API tokens of a running engine (roles viewer, analyst, admin; one tenant or `*`).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The alert history of a running engine: query, get, export.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Print a running engine's alerts as they happen, one line each; reconnects and resumes
    /// where it left off.
    Tail {
        #[command(flatten)]
        filter: AlertFilter,
        /// Start after this history position (0: replay the whole history first); default:
        /// only alerts raised from now on.
        #[arg(long)]
        after: Option<u64>,
        /// Print each alert as one JSON line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA, server and demo sensor certificates in the data dir (if missing).
    Init {
        /// Data dir.
        #[arg(long, default_value = "./vedette-data")]
        data_dir: PathBuf,
    },
    /// Issue a sensor certificate (CN = sensor id, OU = tenant) signed by the data dir's CA.
    Issue {
        /// Data dir.
        #[arg(long, default_value = "./vedette-data")]
        data_dir: PathBuf,
        /// Sensor id: 1–64 of A-Z a-z 0-9 . _ -, starting with a letter or digit.
        #[arg(long)]
        sensor_id: String,
        /// Tenant (same rule as sensor ids).
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = pki::SENSOR_CERT_DAYS)]
        days: u32,
        /// Replace an existing certificate and key of this sensor id.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        ca: CaFiles,
    },
    /// Sign a CSR made elsewhere (the key stays where it was made): CN = sensor id; the
    /// tenant is `--tenant` (a CSR naming another OU is refused).
    Sign {
        /// The CSR (PEM).
        csr: PathBuf,
        /// Tenant of the sensor.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = pki::SENSOR_CERT_DAYS)]
        days: u32,
        /// Where to write the certificate (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Data dir whose CA signs (unless --ca-cert/--ca-key).
        #[arg(long, default_value = "./vedette-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        ca: CaFiles,
    },
}

/// A CA given by path (bring your own CA) instead of the data dir's.
#[derive(clap::Args)]
struct CaFiles {
    /// CA certificate (PEM).
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// CA private key (PEM).
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
}

impl CaFiles {
    fn load(&self) -> anyhow::Result<Option<pki::CertPem>> {
        match (&self.ca_cert, &self.ca_key) {
            (Some(c), Some(k)) => Ok(Some(pki::CertPem::load(c, k)?)),
            _ => Ok(None),
        }
    }
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Compile every rule of a pack; print every error with its rule id and position.
    Validate {
        /// Pack file (YAML).
        pack: PathBuf,
        /// Engine config whose extra tables and reference tables the pack may use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a pack over events (JSON lines) and print each alert as one JSON line.
    Test {
        /// Pack file (YAML); need not be signed.
        pack: PathBuf,
        /// Events, one JSON object per line with the table's columns.
        #[arg(long)]
        events: PathBuf,
        /// Table of the events (default: the one table the pack reads).
        #[arg(long)]
        table: Option<String>,
        /// Rows per evaluation batch.
        #[arg(long, default_value_t = 8192)]
        batch_rows: usize,
        /// Engine config whose extra tables and reference tables the pack may use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Sign a pack: writes NAME.yaml.sig beside NAME.yaml.
    Sign {
        /// Pack file (YAML).
        pack: PathBuf,
        /// Secret key file from `vedette keys generate`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Verify NAME.yaml.sig beside NAME.yaml; exits 0 only for a valid signature by this key.
    Verify {
        /// Pack file (YAML).
        pack: PathBuf,
        /// Public key file.
        #[arg(long)]
        pubkey: PathBuf,
    },
    /// Ask a running engine to re-read its packs directory and swap the new rule set in
    /// (all or nothing; same as SIGHUP).
    Apply {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List a running engine's rules: pack, version, table, state, evaluations, alerts, errors,
    /// late rows, open windows.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Enable a rule of a running engine (persisted across restarts).
    Enable {
        /// Rule id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Disable a rule of a running engine (persisted across restarts).
    Disable {
        /// Rule id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum SinksCommand {
    /// Every sink: state, breaker, delivered, spooled alerts and bytes, oldest spooled alert's
    /// age, dead letters, last success, next retry, and why it is failing.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Send one sample alert (rule `vedette.test`) straight to a sink's destination and show
    /// its answer; exit 1 if it was not delivered.
    Test {
        /// Sink name.
        sink: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Show a sink's dead letters (oldest first) with the destination's reason, as JSON lines.
    List {
        /// Sink name.
        sink: String,
        /// Most entries shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put a sink's dead letters back into its spool for another delivery attempt.
    Replay {
        /// Sink name.
        sink: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a sink's dead letters.
    Purge {
        /// Sink name.
        sink: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum ReferenceCommand {
    /// List reference tables: rows, file, when loaded, last reload error.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Reload a table from its file (rules see the new rows from the next batch on; nothing
    /// is re-evaluated). On error the previous rows stay in use.
    Reload {
        /// Table name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Replace a table's rows with FILE (in the table's configured format, CSV or JSON). The
    /// engine checks it, writes it over the table's file (a restart keeps it) and swaps the
    /// rows in; on error nothing changes.
    Upload {
        /// Table name.
        name: String,
        /// New contents.
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create PREFIX.key (secret, mode 600) and PREFIX.pub.
    Generate {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The config file's text, or the embedded default's.
fn config_text(path: Option<&Path>) -> anyhow::Result<String> {
    Ok(match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => vedette_config::EMBEDDED_DEFAULT.to_string(),
    })
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let text = config_text(path)?;
    Ok(Config::from_toml_with_env(&text, std::env::vars())?)
}

/// A config as `serve` would take it, with every problem of its text, overrides and files.
struct Checked {
    config: Option<Config>,
    problems: Vec<vedette_config::Problem>,
    warnings: Vec<vedette_config::Problem>,
}

/// Reads and checks a config (`validate`, and `serve` before it starts); the name to print.
async fn check_config(path: Option<&Path>, data_dir: Option<PathBuf>) -> anyhow::Result<(String, Checked)> {
    let name = path.map_or("embedded default config".to_string(), |p| p.display().to_string());
    let text = config_text(path)?;
    let (config, mut problems) = Config::parse_all(&text, std::env::vars());
    let mut warnings = Vec::new();
    let config = match config {
        Some(mut c) => {
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
            let mut report = vedette_engine::preflight::check(&c).await;
            problems.append(&mut report.problems);
            warnings = report.warnings;
            Some(c)
        }
        None => None,
    };
    Ok((name, Checked { config, problems, warnings }))
}

/// `vedette sinks list` as a table: one row per sink, then why it is failing.
fn print_sinks(sinks: &[vedette_engine::api::SinkView]) {
    let ago = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0;
                if secs >= 0.0 {
                    format!("{} ago", cli::top::human_secs(secs))
                } else {
                    format!("in {}", cli::top::human_secs(-secs))
                }
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut t = Table::new(&[
        "SINK",
        "TYPE",
        "FORMAT",
        "STATE",
        "BREAKER",
        ">DELIVERED",
        ">SPOOLED",
        ">SPOOL_BYTES",
        ">OLDEST",
        ">DLQ",
        "LAST_SUCCESS",
        "NEXT_RETRY",
    ]);
    for s in sinks {
        let oldest = s.oldest_spooled_age_secs.map_or_else(|| "-".into(), cli::top::human_secs);
        t.row([
            s.name.clone(),
            s.kind.clone(),
            s.format.clone(),
            s.state_label(),
            s.breaker.clone(),
            s.delivered.to_string(),
            s.spooled.to_string(),
            s.spool_bytes.to_string(),
            oldest,
            s.dead_letters.to_string(),
            ago(&s.last_success),
            ago(&s.next_attempt),
        ]);
        if let Some(r) = &s.reason {
            t.note(format!("{}: {r}", s.state));
        }
    }
    t.print();
}

/// Whether log lines carry ANSI colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn log_colours(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the log subscriber; returns what sets a new `log.level` on a config reload
/// (`RUST_LOG`, when set, wins over `log.level`, at start and on reload).
fn init_logging(config: &Config, format: Option<&str>) -> vedette_engine::reload::LogLevelHook {
    use std::io::IsTerminal;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let colours = log_colours(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    let set: Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync> =
        if format.unwrap_or(&config.log.format) == "json" {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        } else {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        };
    std::sync::Arc::new(move |level: &str| {
        if from_env {
            return Err("RUST_LOG is set and wins over log.level".into());
        }
        set(tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?)
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vedette_actors::sinks::http::ensure_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, data_dir } => {
            let (config_path, data_dir_override) = (config.clone(), data_dir.clone());
            // The whole check `validate` does, before anything is written.
            let (name, checked) = check_config(config.as_deref(), data_dir).await?;
            let config = match checked.config {
                Some(c) if checked.problems.is_empty() => c,
                _ => {
                    eprintln!("{name}: {}", vedette_config::ConfigError::Invalid(checked.problems));
                    std::process::exit(1);
                }
            };
            let log_level = init_logging(&config, cli.log_format.as_deref());
            let mut engine = EngineHandle::start(config).await?;
            engine.reloader().set_source(vedette_engine::reload::Source {
                path: config_path,
                data_dir: data_dir_override,
                log_level: Some(log_level),
            });
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("installing the SIGHUP handler")?;
            let shutdown = shutdown_signal();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break engine.shutdown().await,
                    _ = engine.failed() => bail!("a component failed beyond its restart budget; see the log above"),
                    _ = hangup.recv() => {
                        // The config file again; a refusal is logged and what runs stays.
                        let _ = engine.reloader().reload().await;
                    }
                }
            }
        }
        Command::Validate { config, data_dir } => {
            let (name, checked) = check_config(config.as_deref(), data_dir).await?;
            for w in &checked.warnings {
                eprintln!("{name}: warning: {w}");
            }
            if checked.problems.is_empty() {
                println!("{name}: valid");
            } else {
                eprintln!("{name}: {}", vedette_config::ConfigError::Invalid(checked.problems));
                std::process::exit(1);
            }
        }
        Command::Sensor { action: Some(action), .. } => {
            let _ = init_logging(&Config::embedded_default(), cli.log_format.as_deref());
            return cli::sensor::enroll(action).await;
        }
        Command::Sensor { action: None, run } => {
            let _ = init_logging(&Config::embedded_default(), cli.log_format.as_deref());
            return cli::sensor::run(run, shutdown_signal()).await;
        }
        Command::Keys { command: KeysCommand::Generate { out } } => {
            let id = rules_cli::generate_keys(&out)?;
            println!("key id {id}: {0}.key (secret), {0}.pub", out.display());
        }
        Command::Rules { command } => return rules_command(command).await,
        Command::Tokens { command } => return cli::tokens::run(command).await,
        Command::Sensors { command } => return cli::sensors::run(command).await,
        Command::Alerts { command } => return cli::alerts::run(command).await,
        Command::Top(args) => return cli::top::run(args).await,
        Command::Reload { api } => {
            let report = api_call(&api, reqwest::Method::POST, "/api/v1/config/reload", None).await?;
            let changed: Vec<&str> =
                report["changed"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            if changed.is_empty() {
                println!("config reloaded: no key changed (packs and reference files read again)");
            } else {
                println!("config reloaded; changed: {}", changed.join(", "));
            }
            for (what, key) in [("added", "added"), ("restarted with new settings", "changed"), ("removed", "removed")]
            {
                let names: Vec<&str> =
                    report["sinks"][key].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
                if !names.is_empty() {
                    println!("sinks {what}: {}", names.join(", "));
                }
            }
            if report["sinks"]["removed"].as_array().is_some_and(|r| !r.is_empty()) {
                println!("(a removed sink delivers what its spool holds, then goes: `vedette sinks list`)");
            }
        }
        Command::Tail { filter, after, json, api } => return cli::alerts::tail(filter, after, json, api).await,
        Command::Sinks { command: SinksCommand::List { api, output } } => {
            let body = api_call(&api, reqwest::Method::GET, "/api/v1/sinks", None).await?;
            if output.json(&body) {
                return Ok(());
            }
            let sinks: Vec<vedette_engine::api::SinkView> = serde_json::from_value(body)?;
            print_sinks(&sinks);
        }
        Command::Sinks { command: SinksCommand::Test { sink, api } } => {
            let body = api_call(&api, reqwest::Method::POST, &format!("/api/v1/sinks/{sink}/test"), None).await?;
            println!("{sink}: {}", body["detail"].as_str().unwrap_or_default());
        }
        Command::Dlq { command: DlqCommand::List { sink, limit, api } } => {
            let path = format!("/api/v1/sinks/{sink}/dlq?limit={limit}");
            let body = api_call(&api, reqwest::Method::GET, &path, None).await?;
            for e in body["entries"].as_array().into_iter().flatten() {
                println!("{e}");
            }
            eprintln!("{} dead letter(s) in `{sink}`", body["total"]);
        }
        Command::Dlq { command: DlqCommand::Replay { sink, api } } => {
            let path = format!("/api/v1/sinks/{sink}/dlq/replay");
            let body = api_call(&api, reqwest::Method::POST, &path, None).await?;
            println!("{} alert(s) of `{sink}` back in its spool", body["replayed"]);
        }
        Command::Dlq { command: DlqCommand::Purge { sink, api } } => {
            let path = format!("/api/v1/sinks/{sink}/dlq");
            let body = api_call(&api, reqwest::Method::DELETE, &path, None).await?;
            println!("{} dead letter(s) of `{sink}` deleted", body["purged"]);
        }
        Command::Reference { command: ReferenceCommand::List { api, output } } => {
            let body = api_call(&api, reqwest::Method::GET, "/api/v1/reference", None).await?;
            if output.json(&body) {
                return Ok(());
            }
            let tables: Vec<RefStatus> = serde_json::from_value(body)?;
            let mut t = Table::new(&["TABLE", ">ROWS", "LOADED", "FILE"]);
            for r in tables {
                t.row([r.name, r.rows.to_string(), r.loaded_at.unwrap_or_else(|| "-".into()), r.path]);
                if let Some(e) = r.last_error {
                    t.note(format!("last reload refused (previous rows in use): {e}"));
                }
            }
            t.print();
        }
        Command::Reference { command: ReferenceCommand::Reload { name, api } } => {
            let path = format!("/api/v1/reference/{name}/reload");
            let t: RefStatus = serde_json::from_value(api_call(&api, reqwest::Method::POST, &path, None).await?)?;
            println!("{}: {} rows loaded from {}", t.name, t.rows, t.path);
        }
        Command::Reference { command: ReferenceCommand::Upload { name, file, api } } => {
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = format!("/api/v1/reference/{name}");
            let t: RefStatus = serde_json::from_value(api_call(&api, reqwest::Method::PUT, &path, Some(body)).await?)?;
            println!("{}: {} rows uploaded (written to {})", t.name, t.rows, t.path);
        }
        Command::Ca { command: CaCommand::Init { data_dir } } => {
            let created = pki::ensure_dev_pki(&data_dir)?;
            println!(
                "{} in {}",
                if created { "created CA and certificates" } else { "CA already present" },
                data_dir.display()
            );
        }
        Command::Ca { command: CaCommand::Sign { csr, tenant, days, out, data_dir, ca } } => {
            let ca = match ca.load()? {
                Some(ca) => ca,
                None => {
                    let p = pki::PkiPaths::new(&data_dir);
                    pki::CertPem::load(&p.ca_cert, &p.ca_key)?
                }
            };
            let text = std::fs::read_to_string(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let signed = pki::csr::sign_csr(&ca, &text, &tenant, days, None)
                .with_context(|| format!("signing {}", csr.display()))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &signed.cert).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "{}: sensor {} (tenant {}), valid until {}, sha256 {}",
                        path.display(),
                        signed.sensor_id,
                        signed.tenant,
                        signed.not_after.to_rfc3339(),
                        signed.fingerprint
                    );
                }
                None => print!("{}", signed.cert),
            }
        }
        Command::Ca { command: CaCommand::Issue { data_dir, sensor_id, tenant, days, force, ca } } => {
            let ca = ca.load()?;
            let (c, k) = pki::issue_sensor_files(&data_dir, &sensor_id, &tenant, days, force, ca.as_ref())?;
            println!(
                "certificate: {}\nkey: {}\nexpires: {}",
                c.display(),
                k.display(),
                pki::not_after(&c)?.to_rfc3339()
            );
        }
    }
    Ok(())
}

async fn rules_command(command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Validate { pack, config } => {
            let config = config.map(|c| load_config(Some(&c))).transpose()?;
            let errors = rules_cli::validate_pack(&pack, config.as_ref()).await?;
            if errors.is_empty() {
                println!("{}: valid", pack.display());
            } else {
                for e in &errors {
                    eprintln!("{}", e.render(&pack.display().to_string()));
                }
                eprintln!("{}: {} error(s)", pack.display(), errors.len());
                std::process::exit(1);
            }
        }
        RulesCommand::Test { pack, events, table, batch_rows, config } => {
            let config = config.map(|c| load_config(Some(&c))).transpose()?;
            let run = rules_cli::test_pack(&pack, &events, table.as_deref(), batch_rows, config.as_ref()).await?;
            for w in &run.warnings {
                eprintln!("{}:{}: warning: {}", events.display(), w.line, w.reason);
            }
            match run.alerts {
                Ok(alerts) => {
                    for a in alerts {
                        println!("{a}");
                    }
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}:{}: {}", events.display(), e.line, e.reason);
                    }
                    std::process::exit(1);
                }
            }
        }
        RulesCommand::Sign { pack, key } => {
            let sig = rules_cli::sign_pack(&pack, &key)?;
            println!("wrote {}", sig.display());
        }
        RulesCommand::Apply { api } => {
            let report: ApplyReport =
                serde_json::from_value(api_call(&api, reqwest::Method::POST, "/api/v1/rules/apply", None).await?)?;
            let packs: Vec<String> = report.packs.iter().map(|(n, v)| format!("{n} v{v}")).collect();
            println!(
                "applied: {} ({} rules running, {} planned)",
                packs.join(", "),
                report.active_rules,
                report.planned
            );
        }
        RulesCommand::List { api, output } => {
            let body = api_call(&api, reqwest::Method::GET, "/api/v1/rules", None).await?;
            if output.json(&body) {
                return Ok(());
            }
            let status: RulesStatus = serde_json::from_value(body)?;
            let mut t = Table::new(&[
                "RULE",
                "PACK",
                ">VER",
                "TABLE",
                "SEVERITY",
                "STATE",
                ">EVALUATIONS",
                ">ALERTS",
                ">ERRORS",
                ">LATE_ROWS",
                ">OPEN_WINDOWS",
            ]);
            for r in &status.rules {
                let state = match (r.enabled, r.overridden) {
                    (true, false) => "enabled",
                    (true, true) => "enabled*",
                    (false, false) => "disabled",
                    (false, true) => "disabled*",
                };
                t.row([
                    r.id.clone(),
                    r.pack.clone(),
                    r.version.to_string(),
                    r.table.clone(),
                    r.severity.clone(),
                    state.into(),
                    r.evaluations.to_string(),
                    r.alerts.to_string(),
                    r.errors.to_string(),
                    r.late_rows.to_string(),
                    r.open_windows.to_string(),
                ]);
            }
            t.print();
            if status.rules.iter().any(|r| r.overridden) {
                println!("* set at runtime with `vedette rules enable|disable`");
            }
            if let Some(e) = &status.last_error {
                println!("last apply refused (the rules above kept running): {e}");
            }
        }
        RulesCommand::Enable { id, api } => {
            api_call(&api, reqwest::Method::POST, &format!("/api/v1/rules/{id}/enable"), None).await?;
            println!("{id}: enabled");
        }
        RulesCommand::Disable { id, api } => {
            api_call(&api, reqwest::Method::POST, &format!("/api/v1/rules/{id}/disable"), None).await?;
            println!("{id}: disabled");
        }
        RulesCommand::Verify { pack, pubkey } => match rules_cli::verify_pack(&pack, &pubkey) {
            Ok(id) => println!("{}: valid signature by key {id}", pack.display()),
            Err(e) => {
                eprintln!("{}: {e}", pack.display());
                std::process::exit(1);
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_colours;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some("".into())), "an empty NO_COLOR does not count");
        assert!(!log_colours(true, Some("1".into())));
        assert!(!log_colours(false, None), "a file or a pipe gets plain text");
    }
}
