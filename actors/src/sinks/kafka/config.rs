//! librdkafka settings and per-alert routing.

use rdkafka::ClientConfig;
use vedette_config::sinks::KafkaSinkConfig;
use vedette_pipelines::alert::Alert;

/// The producer configuration of sink `name`.
pub fn client_config(name: &str, c: &KafkaSinkConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &c.brokers)
        .set("client.id", format!("vedette-{name}"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &c.compression)
        .set("message.timeout.ms", c.message_timeout.as_millis().to_string())
        // Come back quickly when a broker returns (librdkafka's default backoff reaches 10 s).
        .set("reconnect.backoff.max.ms", "1000")
        .set("linger.ms", "5");
    let protocol = match (c.tls, c.sasl_mechanism.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    cc.set("security.protocol", protocol);
    if let Some(m) = &c.sasl_mechanism {
        cc.set("sasl.mechanism", m);
        if let (Some(u), Some(p)) = (&c.sasl_username, &c.sasl_password) {
            cc.set("sasl.username", u).set("sasl.password", p);
        }
    }
    for (key, path) in
        [("ssl.ca.location", &c.tls_ca), ("ssl.certificate.location", &c.tls_cert), ("ssl.key.location", &c.tls_key)]
    {
        if let Some(p) = path {
            cc.set(key, p.display().to_string());
        }
    }
    for (k, v) in &c.properties {
        cc.set(k, v);
    }
    cc
}

/// The topic of an alert: `{rule_id}`, `{severity}`, `{tenant}`, `{table}` replaced.
pub fn topic(template: &str, a: &Alert) -> String {
    template
        .replace("{rule_id}", &a.rule_id)
        .replace("{severity}", a.severity.as_str())
        .replace("{tenant}", a.tenant.as_deref().unwrap_or("default"))
        .replace("{table}", &a.table)
}

/// The message key of an alert (`alert_id` by default; `none` for no key).
pub fn key(kind: &str, a: &Alert) -> Option<String> {
    match kind {
        "rule_id" => Some(a.rule_id.clone()),
        "sensor_id" => a.sensor_id.clone(),
        "tenant" => a.tenant.clone(),
        "none" => None,
        _ => Some(a.alert_id.to_string()),
    }
}
