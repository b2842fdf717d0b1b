//! Names that identify a sensor: its id (certificate CN) and tenant (certificate OU). The same
//! rule holds everywhere an id enters — CLI, certificate issuance, CSRs, the handshake, the
//! registry, the API — so an id is always safe as a file name, a URL segment and a label.

/// Longest sensor id or tenant name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a sensor id: 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit (so never
/// `.`, `..` or a path). Returns what is wrong.
pub fn check_sensor_id(id: &str) -> Result<(), String> {
    check_name("sensor id", id)
}

/// Checks a tenant name: the same rule as sensor ids.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    check_name("tenant", tenant)
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(format!("{what} `{}` must be 1 to {MAX_NAME_LEN} characters", s.escape_default()));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!("{what} `{}` must start with a letter or a digit", s.escape_default()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
        return Err(format!(
            "{what} `{}` contains `{}`: use only letters, digits, `.`, `_` and `-`",
            s.escape_default(),
            c.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names_never_paths() {
        for ok in ["demo-sensor", "web-01.prod", "A_1", "0"] {
            assert!(check_sensor_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../ca/ca", "..", ".hidden", "-x", "a/b", "a b", "é", "x\0", &"a".repeat(65)] {
            assert!(check_sensor_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_sensor_id("../ca/ca").unwrap_err().contains("must start with a letter or a digit"));
        assert!(check_sensor_id("a/b").unwrap_err().contains("contains `/`"));
        assert!(check_tenant("acme").is_ok());
        assert!(check_tenant("*").is_err(), "`*` is a token scope, not a tenant of sensors");
    }
}
