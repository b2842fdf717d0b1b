//! Byte sizes in config: `4096`, `64KiB`, `256MiB`, `1GiB` (also `KB`/`MB`/`GB`, powers of 10).

use serde::{Deserialize, Deserializer, Serializer};

/// Parses an integer with an optional unit (`B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`).
pub fn parse(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size like `4096`, `64KiB`, `256MiB`, `1GiB`"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

/// Formats a size the way [`parse`] reads it.
pub fn format(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
}

fn from_raw(raw: Raw) -> Result<u64, String> {
    match raw {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => parse(&s),
    }
}

/// serde adapter: `#[serde(with = "crate::bytes")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    from_raw(Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a size like `4096` or `256MiB`"))?)
        .map_err(serde::de::Error::custom)
}

/// serde adapter.
pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*n))
}

/// serde adapter for `Option<u64>` sizes: `#[serde(default, with = "crate::bytes::option")]`.
pub mod option {
    use super::*;

    /// Deserializes an optional size.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::deserialize(d).map(Some)
    }

    /// Serializes an optional size.
    pub fn serialize<S: Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => super::serialize(n, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("4096").unwrap(), 4096);
        assert_eq!(parse("64KiB").unwrap(), 65_536);
        assert_eq!(parse("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse("1GB").unwrap(), 1_000_000_000);
        assert_eq!(format(1 << 30), "1GiB");
        assert_eq!(format(1500), "1500");
        assert!(parse("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("lots").is_err());
    }
}
