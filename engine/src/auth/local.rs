//! The local admin token: on start the engine makes sure `<data_dir>/admin.token` (mode 0600)
//! holds a valid fleet-wide admin token, so the CLI on the same machine works with no
//! ceremony. Whoever can read the data dir already owns the engine's keys and state.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{ALL_TENANTS, Role, TokenStore};
use crate::error::{EngineError, Result};

/// File name of the local admin token in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Name of the local admin token in listings and the audit log.
pub const LOCAL_ADMIN: &str = "local-admin";

/// Keeps the token in `data_dir/admin.token` if it is still valid; otherwise creates a new
/// one (and the file, mode 0600). Returns the file's path and whether a token was created.
pub fn ensure_local_admin(data_dir: &Path, store: &TokenStore) -> Result<(PathBuf, bool)> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && store.verify(existing.trim(), chrono::Utc::now()).is_ok_and(|c| c.role == Role::Admin)
    {
        return Ok((path, false));
    }
    let (_, secret) = store.create(LOCAL_ADMIN, Role::Admin, ALL_TENANTS, None)?;
    let tmp = path.with_extension("token.tmp");
    let io = |what: &str| EngineError::io(format!("{what} {}", tmp.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io("creating"))?;
    f.write_all(format!("{}\n", secret.expose()).as_bytes()).map_err(io("writing"))?;
    f.sync_all().map_err(io("syncing"))?;
    std::fs::rename(&tmp, &path).map_err(EngineError::io(format!("replacing {}", path.display())))?;
    Ok((path, true))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_local_token_file_is_private_and_kept_while_valid() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("s")).unwrap();
        let store = TokenStore::open(&db).unwrap();
        let (path, created) = ensure_local_admin(dir.path(), &store).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(!ensure_local_admin(dir.path(), &store).unwrap().1, "a valid token is kept");
        let id = store.verify(first.trim(), chrono::Utc::now()).unwrap().token_id;
        store.revoke(&id).unwrap();
        assert!(ensure_local_admin(dir.path(), &store).unwrap().1, "a revoked one is replaced");
        assert_ne!(std::fs::read_to_string(&path).unwrap(), first);
    }
}
