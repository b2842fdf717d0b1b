//! Prometheus metrics for every stage (`vedette_<stage>_<what>_<unit>`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// All engine metrics, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Rows accepted, by table.
    pub ingest_events: IntCounterVec,
    /// Rows rejected, by table.
    pub ingest_rows_rejected: IntCounterVec,
    /// Data frames, by outcome (`accepted`, `duplicate`, `error`).
    pub ingest_frames: IntCounterVec,
    /// Payload bytes received in data frames.
    pub ingest_bytes: IntCounter,
    /// Sessions currently connected.
    pub sensors_connected: IntGauge,
    /// Handshakes or hellos refused, by reason.
    pub ingest_refused: IntCounterVec,
    /// Frames received but not yet durable, by table.
    pub inflight_frames: IntGaugeVec,
    /// Rows per batch handed to the rules.
    pub batch_rows: Histogram,
    /// Time from a frame's arrival to its acknowledgement.
    pub frame_latency: Histogram,
    /// Evaluation time per rule and batch.
    pub rule_eval: HistogramVec,
    /// Rule evaluation errors, by rule.
    pub rule_errors: IntCounterVec,
    /// Rows that arrived after their window closed, by rule.
    pub late_rows: IntGaugeVec,
    /// Rule set applies, by outcome (`applied`, `refused`).
    pub rules_apply: IntCounterVec,
    /// Reference table reloads, by table and outcome (`loaded`, `refused`).
    pub reference_reloads: IntCounterVec,
    /// Alerts produced, by rule and severity.
    pub alerts: IntCounterVec,
    /// Alerts held back by the alert-storm guard (reported in summary alerts).
    pub alerts_suppressed: IntCounter,
    /// Alerts dropped because the dedup ledger had their id (already spooled once).
    pub dedup_hits: IntCounter,
    /// Alert ids in the dedup ledger.
    pub dedup_entries: IntGauge,
    /// Ids removed from the dedup ledger, by reason (`expired`, `capacity`).
    pub dedup_evicted: IntCounterVec,
    /// Alerts a sink skipped because its delivery ledger says it delivered them already.
    pub sink_already_delivered: IntCounterVec,
    /// Alerts forwarded by edges, by edge and outcome (`spooled`, `duplicate`).
    pub forwarded: IntCounterVec,
    /// Alerts delivered, by sink.
    pub sink_delivered: IntCounterVec,
    /// Failed delivery attempts (one per batch or health check), by sink.
    pub sink_failed_attempts: IntCounterVec,
    /// Alerts of failed attempts kept for another attempt (one per alert per attempt), by sink.
    pub sink_retried_alerts: IntCounterVec,
    /// Alerts the destination refused permanently (moved to the dead-letter queue), by sink.
    pub sink_dead_lettered: IntCounterVec,
    /// Alerts dropped by a full spool with `drop_oldest`, by sink.
    pub sink_dropped: IntCounterVec,
    /// Alerts in the spool, by sink.
    pub sink_spool_records: IntGaugeVec,
    /// Bytes in the spool, by sink.
    pub sink_spool_bytes: IntGaugeVec,
    /// Circuit breaker state (0 closed, 1 open, 2 half-open), by sink.
    pub sink_breaker_state: IntGaugeVec,
    /// Time from detection to the destination's confirmation, by sink.
    pub sink_delivery_latency: HistogramVec,
    /// Actor restarts by supervisors, by child.
    pub actor_restarts: IntCounterVec,
    /// API requests, by route template and status code.
    pub api_requests: IntCounterVec,
    /// Live alert stream clients connected now.
    pub api_stream_clients: IntGauge,
    /// Alerts in the alert history.
    pub history_alerts: IntGauge,
    /// Bytes of alert JSON in the alert history.
    pub history_bytes: IntGauge,
}

/// Registers a metric and hands it back (names are static, so failures are bugs).
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: prometheus::Result<M>) -> M {
    let m = m.expect("valid metric definition");
    r.register(Box::new(m.clone())).expect("metric registered once");
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(r, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)))
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let secs = prometheus::exponential_buckets(0.000_01, 4.0, 12).expect("valid buckets");
        let sensors_connected =
            register(&r, IntGauge::new("vedette_ingest_sensors_connected", "Sensor sessions currently connected"));
        let inflight_frames = register(
            &r,
            IntGaugeVec::new(
                Opts::new("vedette_pipeline_inflight_frames", "Frames received but not yet durable"),
                &["table"],
            ),
        );
        let ingest_bytes =
            register(&r, IntCounter::new("vedette_ingest_bytes_total", "Data frame payload bytes received"));
        let rule_eval = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("vedette_rule_eval_seconds", "Evaluation time per rule and batch")
                    .buckets(secs.clone()),
                &["rule"],
            ),
        );
        let late_rows = register(
            &r,
            IntGaugeVec::new(
                Opts::new("vedette_rule_late_rows", "Rows that arrived after their event-time window closed"),
                &["rule"],
            ),
        );
        let gauge_vec = |name: &str, help: &str| register(&r, IntGaugeVec::new(Opts::new(name, help), &["sink"]));
        let sink_spool_records = gauge_vec("vedette_sink_spool_records", "Alerts in the spool");
        let sink_spool_bytes = gauge_vec("vedette_sink_spool_bytes", "Bytes in the spool");
        let sink_breaker_state =
            gauge_vec("vedette_sink_breaker_state", "Circuit breaker state (0 closed, 1 open, 2 half-open)");
        let sink_delivery_latency = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("vedette_sink_delivery_latency_seconds", "Detection to confirmed delivery")
                    .buckets(prometheus::exponential_buckets(0.001, 4.0, 12).expect("valid buckets")),
                &["sink"],
            ),
        );
        Self {
            late_rows,
            sink_spool_records,
            sink_spool_bytes,
            sink_breaker_state,
            sink_delivery_latency,
            sink_retried_alerts: counter_vec(
                &r,
                "vedette_sink_retried_alerts_total",
                "Alerts of failed delivery attempts, kept in the spool for another attempt (one per alert per attempt)",
                &["sink"],
            ),
            sink_dead_lettered: counter_vec(
                &r,
                "vedette_sink_dead_lettered_total",
                "Alerts refused permanently (dead-letter queue)",
                &["sink"],
            ),
            sink_dropped: counter_vec(&r, "vedette_sink_dropped_total", "Alerts dropped by a full spool", &["sink"]),
            ingest_events: counter_vec(&r, "vedette_ingest_events_total", "Rows accepted", &["table"]),
            ingest_rows_rejected: counter_vec(&r, "vedette_ingest_rows_rejected_total", "Rows rejected", &["table"]),
            ingest_frames: counter_vec(&r, "vedette_ingest_frames_total", "Data frames by outcome", &["outcome"]),
            ingest_bytes,
            sensors_connected,
            ingest_refused: counter_vec(&r, "vedette_ingest_refused_total", "Connections refused", &["reason"]),
            inflight_frames,
            batch_rows: histogram(
                &r,
                "vedette_pipeline_batch_rows",
                "Rows per batch",
                prometheus::exponential_buckets(1.0, 4.0, 9).expect("valid buckets"),
            ),
            frame_latency: histogram(&r, "vedette_pipeline_frame_latency_seconds", "Frame arrival to ack", secs),
            rule_eval,
            rule_errors: counter_vec(&r, "vedette_rule_errors_total", "Rule evaluation errors", &["rule"]),
            rules_apply: counter_vec(&r, "vedette_rules_apply_total", "Rule set applies by outcome", &["outcome"]),
            reference_reloads: counter_vec(
                &r,
                "vedette_reference_reloads_total",
                "Reference table reloads by outcome",
                &["table", "outcome"],
            ),
            alerts: counter_vec(&r, "vedette_alerts_total", "Alerts produced", &["rule", "severity"]),
            alerts_suppressed: register(
                &r,
                IntCounter::new("vedette_alerts_suppressed_total", "Alerts held back by the alert-storm guard"),
            ),
            dedup_hits: register(
                &r,
                IntCounter::new("vedette_dedup_hits_total", "Alerts dropped because their id was already spooled"),
            ),
            dedup_entries: register(&r, IntGauge::new("vedette_dedup_entries", "Alert ids in the dedup ledger")),
            dedup_evicted: counter_vec(
                &r,
                "vedette_dedup_evicted_total",
                "Ids removed from the dedup ledger by reason",
                &["reason"],
            ),
            sink_already_delivered: counter_vec(
                &r,
                "vedette_sink_already_delivered_total",
                "Alerts skipped because the sink's delivery ledger had them",
                &["sink"],
            ),
            forwarded: counter_vec(
                &r,
                "vedette_forward_received_total",
                "Alerts forwarded by edges, by edge and outcome",
                &["edge", "outcome"],
            ),
            sink_delivered: counter_vec(&r, "vedette_sink_delivered_total", "Alerts delivered", &["sink"]),
            sink_failed_attempts: counter_vec(
                &r,
                "vedette_sink_failed_attempts_total",
                "Delivery attempts that failed (one per batch or health check, whatever its size)",
                &["sink"],
            ),
            actor_restarts: counter_vec(&r, "vedette_actor_restarts_total", "Supervisor restarts", &["actor"]),
            api_requests: counter_vec(
                &r,
                "vedette_api_requests_total",
                "API requests by route and status",
                &["route", "status"],
            ),
            api_stream_clients: register(
                &r,
                IntGauge::new("vedette_api_stream_clients", "Live alert stream clients connected"),
            ),
            history_alerts: register(&r, IntGauge::new("vedette_history_alerts", "Alerts in the alert history")),
            history_bytes: register(
                &r,
                IntGauge::new("vedette_history_bytes", "Bytes of alert JSON in the alert history"),
            ),
            registry: r,
        }
    }

    /// Drops every series of sink `name` (it was removed from the config and has gone).
    pub fn forget_sink(&self, name: &str) {
        let labels = [name];
        for v in [
            &self.sink_already_delivered,
            &self.sink_delivered,
            &self.sink_failed_attempts,
            &self.sink_retried_alerts,
            &self.sink_dead_lettered,
            &self.sink_dropped,
        ] {
            let _ = v.remove_label_values(&labels);
        }
        for v in [&self.sink_spool_records, &self.sink_spool_bytes, &self.sink_breaker_state] {
            let _ = v.remove_label_values(&labels);
        }
        let _ = self.sink_delivery_latency.remove_label_values(&labels);
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out).expect("text encoding");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
