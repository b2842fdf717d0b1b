//! `suppress`: repeats of one detection within a period fold into its first alert, and a
//! summary reports how many there were.
//!
//! A rule with `suppress: D` (which needs a `dedup_key`) gives every alert of one key in one
//! period of length D — aligned to the Unix epoch, by the alert's event time (window start
//! for windowed rules) — the **same alert id** ([`period_start`] feeds the id). The first is
//! spooled; the dedup ledger drops the repeats durably, on any node. This tracker counts the
//! repeats it is told about ([`Suppressions::repeated`]) and, once the period is over, returns
//! one summary alert `vedette.suppressed` per id with repeats: the rule's metadata, row
//! `{rule_id, first_alert_id, suppressed}`, the period as its window, and an id derived from the
//! first alert's, so a summary is delivered once. Counts live in memory: after a restart a
//! period's summary counts only the repeats seen since.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Map;
use uuid::Uuid;

use crate::alert::{ALERT_NAMESPACE, Alert};

/// Rule id of suppression summaries.
pub const SUPPRESSED_RULE: &str = "vedette.suppressed";

/// Start (µs) of the suppression period of length `period_us` holding `t_us`.
pub fn period_start(t_us: i64, period_us: i64) -> i64 {
    t_us.div_euclid(period_us.max(1)) * period_us.max(1)
}

struct Tracked {
    first: Alert,
    period_end_us: i64,
    repeats: u64,
}

/// Suppressed repeats per first alert, waiting for their period to end.
#[derive(Default)]
pub struct Suppressions {
    by_id: HashMap<Uuid, Tracked>,
}

impl Suppressions {
    /// A first alert of a suppressing rule was spooled; its period ends at `period_end_us`.
    pub fn first(&mut self, alert: &Alert, period_end_us: i64) {
        self.by_id.entry(alert.alert_id).or_insert_with(|| Tracked { first: alert.clone(), period_end_us, repeats: 0 });
    }

    /// An alert of a suppressing rule was dropped as a repeat of `id` (`alert` is the repeat;
    /// it stands in for the first one if this node never saw it).
    pub fn repeated(&mut self, alert: &Alert, period_end_us: i64) {
        self.by_id
            .entry(alert.alert_id)
            .or_insert_with(|| Tracked { first: alert.clone(), period_end_us, repeats: 0 })
            .repeats += 1;
    }

    /// Summaries of periods over at `now`, for ids that had repeats; forgets every period over.
    pub fn expired(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let now_us = now.timestamp_micros();
        let over: Vec<Uuid> = self.by_id.iter().filter(|(_, t)| t.period_end_us <= now_us).map(|(id, _)| *id).collect();
        over.into_iter()
            .filter_map(|id| self.by_id.remove(&id))
            .filter(|t| t.repeats > 0)
            .map(|t| summary(t, now))
            .collect()
    }

    /// Ids tracked now.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

fn summary(t: Tracked, now: DateTime<Utc>) -> Alert {
    let first = t.first;
    let mut row = Map::new();
    row.insert("rule_id".into(), first.rule_id.clone().into());
    row.insert("first_alert_id".into(), first.alert_id.to_string().into());
    row.insert("suppressed".into(), t.repeats.into());
    let end = crate::values::micros_to_datetime(t.period_end_us);
    Alert {
        alert_id: Uuid::new_v5(&ALERT_NAMESPACE, format!("{SUPPRESSED_RULE}/{}", first.alert_id).as_bytes()),
        rule_id: SUPPRESSED_RULE.into(),
        rule_name: format!("Suppressed repeats: {}", first.rule_name),
        description: format!(
            "Rule `{}` detected the same thing {} more time(s) in this period; alert {} stands for them.",
            first.rule_id, t.repeats, first.alert_id
        ),
        tags: vec!["vedette.internal".into()],
        window_start: first.window_start.or(Some(first.ts)),
        window_end: Some(end),
        ts: end,
        detected_at: now,
        edge: None,
        row,
        ..first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_per_first_alert_and_summarised_once_the_period_is_over() {
        let mut s = Suppressions::default();
        let a = crate::formats::sample_alert();
        let mut b = crate::formats::sample_alert();
        b.alert_id = Uuid::from_u128(2);
        s.first(&a, 300);
        s.first(&b, 300);
        for _ in 0..4 {
            s.repeated(&a, 300);
        }
        assert!(s.expired(crate::values::micros_to_datetime(299)).is_empty(), "period not over");
        let out = s.expired(crate::values::micros_to_datetime(300));
        assert_eq!(out.len(), 1, "only the alert with repeats is summarised");
        let sum = &out[0];
        assert_eq!((sum.rule_id.as_str(), sum.row["suppressed"].as_u64()), (SUPPRESSED_RULE, Some(4)));
        assert_eq!(sum.row["first_alert_id"], a.alert_id.to_string());
        assert_eq!(sum.severity, a.severity);
        assert!(s.is_empty(), "both periods are forgotten");
        assert_eq!(period_start(299, 100), 200);
        assert_eq!(period_start(-1, 100), -100);
    }
}
