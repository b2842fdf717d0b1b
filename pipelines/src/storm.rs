//! Alert-storm guard: per (tenant, rule), at most `max` alerts per interval pass; the rest are
//! counted and, once the interval is over, reported as one summary alert
//! (`vedette.alert_storm`) carrying the count, so a noisy rule cannot flood the SIEMs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Map;

use crate::alert::{ALERT_NAMESPACE, Alert};

/// Rule id of summary alerts.
pub const STORM_RULE: &str = "vedette.alert_storm";

#[derive(Debug)]
struct Window {
    start: DateTime<Utc>,
    passed: u32,
    suppressed: u64,
    /// The first suppressed alert: the summary copies its rule metadata.
    sample: Option<Alert>,
}

/// The guard's state (in memory: a restart starts fresh intervals).
#[derive(Debug)]
pub struct StormGuard {
    max: u32,
    interval: chrono::Duration,
    windows: HashMap<(String, String), Window>,
}

impl StormGuard {
    /// At most `max` alerts per rule and tenant per `interval` (`max` = 0: no limit).
    pub fn new(max: u32, interval: std::time::Duration) -> Self {
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        Self { max, interval, windows: HashMap::new() }
    }

    /// Filters `alerts` at `now`: returns those that pass, followed by summaries of intervals
    /// that ended.
    pub fn admit(&mut self, alerts: Vec<Alert>, now: DateTime<Utc>) -> Vec<Alert> {
        if self.max == 0 {
            return alerts;
        }
        let mut out = self.expired(now);
        for a in alerts {
            let key = (a.tenant.clone().unwrap_or_default(), a.rule_id.clone());
            let w = self.windows.entry(key).or_insert(Window { start: now, passed: 0, suppressed: 0, sample: None });
            if w.passed < self.max {
                w.passed += 1;
                out.push(a);
            } else {
                w.suppressed += 1;
                if w.sample.is_none() {
                    w.sample = Some(a);
                }
            }
        }
        out
    }

    /// Summaries of intervals that ended by `now` (call periodically so a storm that stopped
    /// is still reported).
    pub fn expired(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let interval = self.interval;
        let ended: Vec<(String, String)> =
            self.windows.iter().filter(|(_, w)| now - w.start >= interval).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for key in ended {
            let Some(w) = self.windows.remove(&key) else { continue };
            if let Some(sample) = w.sample {
                out.push(summary(sample, w.start, w.start + interval, w.passed, w.suppressed, now));
            }
        }
        out
    }
}

fn summary(
    sample: Alert,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    passed: u32,
    suppressed: u64,
    now: DateTime<Utc>,
) -> Alert {
    let mut row = Map::new();
    row.insert("rule_id".into(), sample.rule_id.clone().into());
    row.insert("suppressed".into(), suppressed.into());
    row.insert("delivered".into(), passed.into());
    let name = format!(
        "{}/{}/{}/{}",
        STORM_RULE,
        sample.tenant.as_deref().unwrap_or(""),
        sample.rule_id,
        start.timestamp_micros()
    );
    Alert {
        alert_id: uuid::Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes()),
        rule_id: STORM_RULE.into(),
        rule_name: format!("Alert storm: {}", sample.rule_name),
        description: format!(
            "Rule `{}` produced {} more alerts than the {} allowed in this interval; they were not delivered one by one.",
            sample.rule_id, suppressed, passed
        ),
        tags: vec!["vedette.internal".into()],
        window_start: Some(start),
        window_end: Some(end),
        edge: None,
        ts: end,
        detected_at: now,
        row,
        ..sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, tenant: &str) -> Alert {
        let mut a = crate::formats::sample_alert();
        a.rule_id = rule.into();
        a.tenant = Some(tenant.into());
        a
    }

    #[test]
    fn excess_alerts_are_folded_into_one_summary_per_rule_and_tenant() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        let mut g = StormGuard::new(3, std::time::Duration::from_secs(60));
        let burst: Vec<Alert> = (0..10).map(|_| alert("noisy", "acme")).chain([alert("quiet", "acme")]).collect();
        let out = g.admit(burst, t0);
        assert_eq!(out.iter().filter(|a| a.rule_id == "noisy").count(), 3);
        assert_eq!(out.iter().filter(|a| a.rule_id == "quiet").count(), 1);
        // Another tenant has its own budget.
        assert_eq!(g.admit(vec![alert("noisy", "other"); 2], t0).len(), 2);
        assert!(g.expired(t0 + chrono::Duration::seconds(59)).is_empty());
        let summaries = g.expired(t0 + chrono::Duration::seconds(60));
        assert_eq!(summaries.len(), 1, "only the interval with suppressed alerts reports");
        let s = &summaries[0];
        assert_eq!(s.rule_id, STORM_RULE);
        assert_eq!((s.row["rule_id"].as_str(), s.row["suppressed"].as_u64()), (Some("noisy"), Some(7)));
        assert_eq!(s.tenant.as_deref(), Some("acme"));
        assert_eq!(s.window_end.unwrap() - s.window_start.unwrap(), chrono::Duration::seconds(60));
        // A new interval starts with a fresh budget.
        assert_eq!(g.admit(vec![alert("noisy", "acme"); 3], t0 + chrono::Duration::seconds(61)).len(), 3);
    }

    #[test]
    fn zero_turns_the_guard_off() {
        let mut g = StormGuard::new(0, std::time::Duration::from_secs(60));
        assert_eq!(g.admit(vec![alert("r", "t"); 5000], Utc::now()).len(), 5000);
    }
}
