use super::*;

#[test]
fn embedded_default_parses_with_documented_listeners() {
    let c = Config::embedded_default();
    assert_eq!(c.ingest.listen.to_string(), "127.0.0.1:7700");
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:7780");
    assert_eq!(c.effective_sinks().len(), 2);
}

#[test]
fn empty_file_gets_defaults() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c.data_dir, PathBuf::from("./vedette-data"));
    assert_eq!(c.pipeline.batch_rows, 8192);
    assert_eq!(c.effective_sinks()[1].name(), "alerts_file");
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
        colour = "blue"
        [ingest]
        listen = "not-an-address"
        [pipeline]
        batch_linger = "soon"
        [[sinks]]
        name = "a"
        type = "stdout"
        [[sinks]]
        name = "b"
        type = "carrier_pigeon"
        [[sinks]]
        name = "c"
        type = "file"
    "#;
    let err = Config::from_toml_str(text).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["ingest.listen", "pipeline.batch_linger", "sinks[1].type", "sinks[2]", "colour"], "{err}");
    let text = err.to_string();
    assert!(text.contains("5 problems"), "{text}");
    assert!(text.contains("carrier_pigeon"), "{text}");
    assert!(text.contains("missing field `path`"), "{text}");
}

#[test]
fn one_pass_reports_every_bad_key_and_the_cross_key_checks_beside_them() {
    // Two bad values in one section, an unknown key in another, a cross-key problem in a
    // section that has a bad value too, and a bad element of a list: all in one answer.
    let text = r#"
        [ingest]
        max_frame_bytes = "big"
        heartbeat_interval = "10s"
        idle_timeout = "5s"
        listen = 7700
        [api]
        rate_limit_per_sec = 0
        lisen = "127.0.0.1:1"
        [rules]
        trusted_keys = ["a.pub", 3]
    "#;
    let err = Config::from_toml_str(text).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "ingest.listen",
            "ingest.max_frame_bytes",
            "api.lisen",
            "rules.trusted_keys[1]",
            "ingest.idle_timeout",
            "api.rate_limit_per_sec"
        ],
        "{err}"
    );
}

#[test]
fn env_overrides_are_checked_like_the_file() {
    let err = Config::from_toml_with_env("", [("VEDETTE__API__LISTEN", "notanaddr")]).unwrap_err();
    assert_eq!(err.problems()[0].path, "api.listen", "{err}");
    assert!(err.problems()[0].message.contains("invalid socket address"), "{err}");
}

#[test]
fn semantic_problems_name_their_keys() {
    let text = r#"
        [ingest]
        receive_window_bytes = 1024
        [pipeline]
        batch_rows = 0
        [log]
        format = "xml"
        [[sinks]]
        name = "x"
        type = "stdout"
        [[sinks]]
        name = "x"
        type = "file"
        path = "a.jsonl"
        [[tables]]
        name = "dns"
        columns = { query = "string", ttl = "uint128" }
    "#;
    let err = Config::from_toml_str(text).unwrap_err();
    let got: Vec<_> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        got,
        [
            "ingest.receive_window_bytes: must be from 4096 to 67108864 (64 MiB)",
            "pipeline.batch_rows: must be at least 1",
            "log.format: `xml` is not one of: pretty, json",
            "sinks[1].name: `x` is already used by sinks[0]",
            "tables[0].columns.ttl: `uint128` is not one of: string, int64, float64, boolean, timestamp",
        ]
    );
}

#[test]
fn syntax_errors_point_at_the_line() {
    let err = Config::from_toml_str("[ingest\nlisten = 1").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn env_overrides_apply_typed_values() {
    let env = [("VEDETTE__API__LISTEN", "127.0.0.1:9999"), ("VEDETTE__PIPELINE__BATCH_ROWS", "12"), ("OTHER", "x")];
    let c = Config::from_toml_with_env("", env).unwrap();
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(c.pipeline.batch_rows, 12);
    let err = Config::from_toml_with_env("", [("VEDETTE__PIPELINE__BATCH_ROWS", "\"many\"")]).unwrap_err();
    assert_eq!(err.problems()[0].path, "pipeline.batch_rows");
}

#[test]
fn example_config_in_the_repo_parses() {
    let c = Config::from_toml_str(include_str!("../vedette.example.toml")).unwrap();
    assert_eq!(c.tables[0].name, "dns_events");
    assert_eq!(c.sinks.len(), 3);
    assert_eq!(c.sinks[2].format(), Format::Cef);
    assert_eq!(c.sinks[1].common.spool.max_bytes, 512 << 20);
    assert_eq!(c.rules.packs_dir.as_deref(), Some(std::path::Path::new("packs")));
}

#[test]
fn reference_tables_are_checked() {
    let text = r#"
        [[reference_tables]]
        name = "ioc_hashes"
        path = "iocs/hashes.csv"
        columns = { sha256 = "string", score = "int64" }
        [[reference_tables]]
        name = "ioc_hashes"
        path = "more.txt"
        columns = { sha256 = "blob" }
        [[reference_tables]]
        name = "Bad-Name"
        path = "x.json"
        format = "xml"
        columns = {}
        max_rows = 0
    "#;
    let err = Config::from_toml_str(text).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "reference_tables[1].columns.sha256",
            "reference_tables[1].name",
            "reference_tables[1].format",
            "reference_tables[2].name",
            "reference_tables[2].columns",
            "reference_tables[2].format",
            "reference_tables[2].max_rows"
        ],
        "{err}"
    );
    let ok = Config::from_toml_str(
        &text.split("[[reference_tables]]").take(2).collect::<Vec<_>>().join("[[reference_tables]]"),
    )
    .unwrap();
    assert_eq!(ok.reference_tables[0].effective_format(), Some("csv"));
    assert_eq!(ok.reference_tables[0].max_rows, 1_000_000);
}

#[test]
fn every_sink_kind_parses_with_shared_and_own_settings() {
    let text = r#"
        [[sinks]]
        name = "out"
        type = "stdout"
        [[sinks]]
        name = "archive"
        type = "file"
        path = "alerts/all.jsonl"
        format = "ocsf"
        rotate_bytes = "100MiB"
        spool = { max_bytes = "1GiB", policy = "drop_oldest" }
        [[sinks]]
        name = "hook"
        type = "webhook"
        url = "http://127.0.0.1:9000/in"
        secret = "s3cret"
        headers = { "X-Team" = "soc" }
        batch = { max_events = 50, linger = "1s" }
        rate_limit = { per_second = 10.5, burst = 20 }
        [[sinks]]
        name = "splunk"
        type = "splunk_hec"
        url = "https://splunk:8088"
        token = "t"
        ack = true
        channel = "0f8a6c1e-4b2d-4c3e-9f00-112233445566"
        max_request_bytes = "2MB"
        retry = { base = "100ms", cap = "10s" }
        breaker = { failures = 3, open_for = "5s" }
        [[sinks]]
        name = "es"
        type = "elasticsearch"
        url = "http://127.0.0.1:9200"
        api_key = "k"
        [[sinks]]
        name = "kafka"
        type = "kafka"
        brokers = "127.0.0.1:9092"
        topic = "alerts-{severity}"
        format = "cef"
        sasl_mechanism = "SCRAM-SHA-512"
        sasl_username = "u"
        sasl_password = "p"
        properties = { "linger.ms" = "5" }
    "#;
    let c = Config::from_toml_str(text).unwrap();
    let kinds: Vec<&str> = c.sinks.iter().map(|s| s.connector.kind()).collect();
    assert_eq!(kinds, ["stdout", "file", "webhook", "splunk_hec", "elasticsearch", "kafka"]);
    assert_eq!(c.sinks[0].format(), Format::Text);
    assert_eq!(c.sinks[1].format(), Format::Ocsf);
    assert_eq!(c.sinks[1].common.spool.max_bytes, 1 << 30);
    assert_eq!(c.sinks[1].common.spool.policy, OverflowPolicy::DropOldest);
    let Connector::File(f) = &c.sinks[1].connector else { unreachable!() };
    assert_eq!(f.rotate_bytes, Some(100 << 20));
    assert_eq!(c.sinks[2].common.batch.max_events, 50);
    assert_eq!(c.sinks[2].common.batch.max_bytes, 1 << 20, "unset keys of a section keep their default");
    assert_eq!(c.sinks[3].common.breaker.failures, 3);
    assert_eq!(c.sinks[5].format(), Format::Cef);
    let Connector::SplunkHec(h) = &c.sinks[3].connector else { unreachable!() };
    assert_eq!(h.max_request_bytes, 2_000_000);
    // The same config through serde (e.g. an API reading JSON) gives the same sinks.
    let again: Vec<SinkConfig> =
        c.sinks.iter().map(|s| toml::Value::try_from(s).unwrap().try_into::<SinkConfig>().unwrap()).collect();
    assert_eq!(again, c.sinks);
}

#[test]
fn sink_problems_name_the_sink_and_key() {
    let text = r#"
        [[sinks]]
        name = "hook"
        type = "webhook"
        url = "ftp://x"
        format = "text"
        colour = "red"
        [[sinks]]
        name = "k"
        type = "kafka"
        brokers = "b:9092"
        topic = "t"
        key = "host"
        spool = { max_bytes = "1KiB", policy = "sometimes" }
    "#;
    let err = Config::from_toml_str(text).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    // Every bad key at once: the unknown and unparsable ones, then the checks of the values.
    assert_eq!(
        paths,
        [
            "sinks[0].colour",
            "sinks[1].spool.policy",
            "sinks[0].format",
            "sinks[0].url",
            "sinks[1].spool.max_bytes",
            "sinks[1].key"
        ],
        "{err}"
    );
    assert!(err.to_string().contains("colour"), "{err}");
    // The hint lists the connector's keys and the keys every sink has.
    let hint = &err.problems()[0].message;
    assert!(hint.contains("`url`") && hint.contains("`format`") && hint.contains("`spool`"), "{hint}");

    let text = r#"
        [[sinks]]
        name = "hook"
        type = "webhook"
        url = "ftp://x"
        format = "text"
        [[sinks]]
        name = "k"
        type = "kafka"
        brokers = "b:9092"
        topic = "t"
        key = "host"
        spool = { max_bytes = "1KiB" }
        sasl_mechanism = "PLAIN"
    "#;
    let err = Config::from_toml_str(text).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["sinks[0].format", "sinks[0].url", "sinks[1].spool.max_bytes", "sinks[1].key", "sinks[1].sasl_username"],
        "{err}"
    );
}

#[test]
fn hec_request_size_is_checked() {
    let hec = |size: &str| {
        format!(
            "[[sinks]]\nname = \"s\"\ntype = \"splunk_hec\"\nurl = \"http://h:8088\"\ntoken = \"t\"\nmax_request_bytes = {size}\n"
        )
    };
    let err = Config::from_toml_str(&hec("\"100B\"")).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["sinks[0].max_request_bytes"], "{err}");
    assert!(err.to_string().contains("at least 1KiB"), "{err}");
    let err = Config::from_toml_str(&hec("\"1 parsec\"")).unwrap_err();
    assert!(err.to_string().contains("max_request_bytes") && err.to_string().contains("unknown unit"), "{err}");
}

#[test]
fn routes_need_one_forward_sink_and_a_forward_sink_is_checked() {
    let err = Config::from_toml_str("[rules]\nfollow_upstream = true\n").unwrap_err().to_string();
    assert!(err.contains("rules.follow_upstream") && err.contains("needs a sink of type `forward`"), "{err}");
    let no_upstream = "[[sinks]]\nname = \"s\"\ntype = \"stdout\"\nroute = \"proxy\"\n";
    let err = Config::from_toml_str(no_upstream).unwrap_err().to_string();
    assert!(err.contains("sinks[0].route") && err.contains("need a sink of type `forward`"), "{err}");
    let forward = |name: &str, extra: &str| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"forward\"\nserver = \"127.0.0.1:7700\"\nca = \"c\"\ncert = \"e\"\nkey = \"k\"\n{extra}"
        )
    };
    let err = Config::from_toml_str(&(forward("a", "") + &forward("b", ""))).unwrap_err().to_string();
    assert!(err.contains("at most one sink may be of type `forward`"), "{err}");
    let err = Config::from_toml_str(&forward("a", "route = \"hybrid\"\nformat = \"cef\"\n")).unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["sinks[0].route", "sinks[0].format"], "{err}");
    let err = Config::from_toml_str(&forward("a", "").replace("127.0.0.1:7700", "upstream")).unwrap_err().to_string();
    assert!(err.contains("sinks[0].server") && err.contains("not an ip:port"), "{err}");
    assert!(
        Config::from_toml_str(
            &(forward("up", "") + "[[sinks]]\nname = \"s\"\ntype = \"stdout\"\nroute = \"hybrid\"\n")
        )
        .is_ok()
    );
}

#[test]
fn relative_paths_are_inside_the_data_dir_and_absolute_ones_stay() {
    let text = r#"
        data_dir = "/srv/vedette"
        [ingest]
        ca_cert = "pki/ca.pem"
        server_cert = "/etc/vedette/server.pem"
        server_key = "pki/server.key"
        [rules]
        packs_dir = "packs"
        trusted_keys = ["keys/team.pub"]
        [[reference_tables]]
        name = "iocs"
        path = "iocs.csv"
        columns = { sha256 = "string" }
        [[sinks]]
        name = "hook"
        type = "webhook"
        url = "https://siem.example/hook"
        tls_ca = "siem-ca.pem"
        [[sinks]]
        name = "k"
        type = "kafka"
        brokers = "b:9092"
        topic = "t"
        tls = true
        tls_ca = "kafka/ca.pem"
        [[sinks]]
        name = "f"
        type = "file"
        path = "out/alerts.jsonl"
    "#;
    let mut c = Config::from_toml_str(text).unwrap();
    c.resolve_paths();
    let p = |s: &str| Some(std::path::PathBuf::from(s));
    assert_eq!(c.ingest.ca_cert, p("/srv/vedette/pki/ca.pem"));
    assert_eq!(c.ingest.server_cert, p("/etc/vedette/server.pem"));
    assert_eq!(c.ingest.server_key, p("/srv/vedette/pki/server.key"));
    assert_eq!(c.rules.packs_dir, p("/srv/vedette/packs"));
    assert_eq!(c.rules.trusted_keys, [std::path::PathBuf::from("/srv/vedette/keys/team.pub")]);
    assert_eq!(c.reference_tables[0].path, std::path::PathBuf::from("/srv/vedette/iocs.csv"));
    let Connector::Webhook(w) = &c.sinks[0].connector else { panic!() };
    assert_eq!(w.tls_ca, p("/srv/vedette/siem-ca.pem"));
    let Connector::Kafka(k) = &c.sinks[1].connector else { panic!() };
    assert_eq!(k.tls_ca, p("/srv/vedette/kafka/ca.pem"));
    let Connector::File(f) = &c.sinks[2].connector else { panic!() };
    assert_eq!(f.path, std::path::PathBuf::from("/srv/vedette/out/alerts.jsonl"));
    let once = format!("{c:?}");
    c.resolve_paths();
    assert_eq!(format!("{c:?}"), once, "resolving twice changes nothing");
}

#[test]
fn a_relative_data_dir_is_made_absolute_so_paths_are_joined_once() {
    let mut c = Config::from_toml_str(
        "data_dir = \"./vedette-data\"\n[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"alerts.jsonl\"\n",
    )
    .unwrap();
    c.resolve_paths();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.data_dir, cwd.join("vedette-data"));
    let once = format!("{c:?}");
    c.resolve_paths();
    assert_eq!(format!("{c:?}"), once, "resolving twice changes nothing");
    let Connector::File(f) = &c.sinks[0].connector else { panic!() };
    assert_eq!(f.path, cwd.join("vedette-data/alerts.jsonl"));
}
