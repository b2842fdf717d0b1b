//! What a history query asks for: filters, their validation from query parameters, and the
//! opaque page cursor. Pure: no storage.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::Digest;
use vedette_pipelines::rule::Severity;

use super::triage::TriageState;

/// A bad query parameter: names the parameter and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{param}`: {message}")]
pub struct ParamError {
    /// The parameter.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

impl ParamError {
    /// A problem with `param`.
    pub fn new(param: &str, message: impl Into<String>) -> Self {
        Self { param: param.into(), message: message.into() }
    }
}

/// Alert filters shared by query, export and the live stream. Every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Rule id, exact.
    pub rule: Option<String>,
    /// Minimum severity.
    pub min_severity: Option<Severity>,
    /// Sensor id, exact.
    pub sensor: Option<String>,
    /// Host, exact.
    pub host: Option<String>,
    /// Tenant, exact (`Some("")` selects alerts without a tenant, e.g. internal ones).
    pub tenant: Option<String>,
    /// `detected_at` at or after this (µs since the epoch).
    pub since: Option<i64>,
    /// `detected_at` before this (µs since the epoch).
    pub until: Option<i64>,
    /// Triage state.
    pub triage: Option<TriageState>,
}

/// Parameters every alert route accepts (beyond its own).
pub const FILTER_PARAMS: &[&str] = &["rule", "severity", "sensor", "host", "tenant", "since", "until", "triage"];

/// Parses an RFC 3339 time parameter.
pub fn parse_time(param: &str, v: &str) -> Result<i64, ParamError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|e| ParamError::new(param, format!("`{v}` is not an RFC 3339 time like 2026-12-01T10:00:00Z ({e})")))
}

/// Parses a severity name.
pub fn parse_severity(param: &str, v: &str) -> Result<Severity, ParamError> {
    match v {
        "info" => Ok(Severity::Info),
        "low" => Ok(Severity::Low),
        "medium" => Ok(Severity::Medium),
        "high" => Ok(Severity::High),
        "critical" => Ok(Severity::Critical),
        _ => Err(ParamError::new(param, format!("`{v}` is not one of: info, low, medium, high, critical"))),
    }
}

/// Refuses parameters outside `allowed` (a misspelt filter must not silently widen a query).
pub fn check_known(params: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), ParamError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ParamError::new(k, format!("unknown parameter (known: {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn non_empty(params: &BTreeMap<String, String>, key: &str) -> Result<Option<String>, ParamError> {
    match params.get(key) {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > 512 => Err(ParamError::new(key, "must be 1 to 512 characters")),
        Some(v) => Ok(Some(v.clone())),
    }
}

impl Filter {
    /// Reads the filter parameters (others are the caller's to check).
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Self, ParamError> {
        let since = params.get("since").map(|v| parse_time("since", v)).transpose()?;
        let until = params.get("until").map(|v| parse_time("until", v)).transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ParamError::new("until", "must be later than `since`"));
        }
        Ok(Self {
            rule: non_empty(params, "rule")?,
            min_severity: params.get("severity").map(|v| parse_severity("severity", v)).transpose()?,
            sensor: non_empty(params, "sensor")?,
            host: non_empty(params, "host")?,
            tenant: match params.get("tenant") {
                Some(t) if t.len() > 512 => return Err(ParamError::new("tenant", "at most 512 characters")),
                other => other.cloned(),
            },
            since,
            until,
            triage: params
                .get("triage")
                .map(|v| {
                    TriageState::parse(v).ok_or_else(|| {
                        ParamError::new("triage", format!("`{v}` is not one of: new, acknowledged, resolved"))
                    })
                })
                .transpose()?,
        })
    }

    /// Whether `detected_at` (µs) is inside the time range.
    pub fn time_matches(&self, micros: i64) -> bool {
        self.since.is_none_or(|s| micros >= s) && self.until.is_none_or(|u| micros < u)
    }

    /// Whether the filter restricts time at all.
    pub fn has_time(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// A stable digest of the filter: a cursor is only valid with the filters it was made for.
    fn fingerprint(&self) -> [u8; 8] {
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.rule, self.min_severity, self.sensor, self.host, self.tenant, self.since, self.until, self.triage
        );
        let d = sha2::Sha256::digest(text.as_bytes());
        d[..8].try_into().expect("8 bytes")
    }
}

/// Cursors look like `c1.<base64url>`: the last position of the previous page and the filter
/// fingerprint.
const CURSOR_PREFIX: &str = "c1.";

/// The cursor that continues after (below) `position` with `filter`.
pub fn encode_cursor(position: u64, filter: &Filter) -> String {
    let mut raw = position.to_be_bytes().to_vec();
    raw.extend_from_slice(&filter.fingerprint());
    format!("{CURSOR_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Reads a cursor made by [`encode_cursor`] for the same filter.
pub fn decode_cursor(cursor: &str, filter: &Filter) -> Result<u64, ParamError> {
    let bad = || ParamError::new("cursor", "not a cursor of this API (use `next_cursor` of the previous page)");
    let body = cursor.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
    if raw.len() != 16 {
        return Err(bad());
    }
    if raw[8..] != filter.fingerprint() {
        return Err(ParamError::new("cursor", "was made for other filters; repeat the first request's filters"));
    }
    Ok(u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")))
}

/// Parses `limit` (1 ..= `max`, default `default`).
pub fn parse_limit(params: &BTreeMap<String, String>, default: usize, max: usize) -> Result<usize, ParamError> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ParamError::new("limit", format!("`{v}` is not a whole number from 1 to {max}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_are_parsed_and_bad_values_name_their_parameter() {
        let f = Filter::from_params(&params(&[("severity", "high"), ("since", "2026-12-01T10:00:00Z")])).unwrap();
        assert_eq!(f.min_severity, Some(Severity::High));
        assert_eq!(f.since, Some(1_796_119_200_000_000));
        for (k, v) in [("severity", "urgent"), ("since", "yesterday"), ("until", "2026-13-01T00:00:00Z"), ("rule", "")]
        {
            let e = Filter::from_params(&params(&[(k, v)])).unwrap_err();
            assert_eq!(e.param, k, "{e}");
        }
        let e = Filter::from_params(&params(&[("since", "2026-12-02T00:00:00Z"), ("until", "2026-12-01T00:00:00Z")]))
            .unwrap_err();
        assert_eq!(e.param, "until");
        assert_eq!(check_known(&params(&[("sevrity", "x")]), FILTER_PARAMS).unwrap_err().param, "sevrity");
        assert_eq!(parse_limit(&params(&[("limit", "1001")]), 100, 1000).unwrap_err().param, "limit");
        assert_eq!(parse_limit(&params(&[]), 100, 1000), Ok(100));
    }

    #[test]
    fn cursors_round_trip_only_with_the_same_filters() {
        let f = Filter { rule: Some("r".into()), ..Filter::default() };
        let c = encode_cursor(42, &f);
        assert_eq!(decode_cursor(&c, &f), Ok(42));
        assert!(decode_cursor(&c, &Filter::default()).unwrap_err().message.contains("other filters"));
        assert!(decode_cursor("c1.!!", &f).is_err());
        assert!(decode_cursor("42", &f).is_err());
    }
}

#[cfg(test)]
mod no_panic {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Query parameters come from anyone who can reach the API: any text is an answer or a
        /// named error, never a panic.
        #[test]
        fn any_parameters_are_parsed_or_refused_by_name(
            params in proptest::collection::btree_map(
                proptest::sample::select(vec!["rule", "severity", "sensor", "host", "tenant", "since", "until", "limit", "cursor", "x"]),
                ".{0,80}",
                0..8,
            ),
        ) {
            let params: BTreeMap<String, String> = params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            match Filter::from_params(&params) {
                Ok(f) => {
                    if let Some(c) = params.get("cursor") {
                        let _ = decode_cursor(c, &f);
                    }
                }
                Err(e) => prop_assert!(params.contains_key(&e.param)),
            }
            let _ = parse_limit(&params, 100, 1000);
            let _ = check_known(&params, FILTER_PARAMS);
        }

        #[test]
        fn any_cursor_text_is_refused_or_read(c in ".{0,64}", b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let f = Filter::default();
            let _ = decode_cursor(&c, &f);
            let raw = format!("c1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b));
            let _ = decode_cursor(&raw, &f);
        }
    }
}
