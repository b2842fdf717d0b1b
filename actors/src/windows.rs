//! Window checkpoints in the state store (tree `windows`): a rule's base under its state key,
//! its deltas under the key's log prefix (format in [`vedette_pipelines::window::checkpoint`]).

use sled::Tree;
use vedette_pipelines::window::checkpoint::{Stored, log_prefix};

/// What is stored for state key `key`: its base and its log in order; `None` without a base.
/// Deltas left without a base (never written by the engine, which removes a rule's log with
/// its base) are removed, so they can never be applied to a later base.
pub fn load(tree: &Tree, key: &str) -> Option<Stored> {
    let prefix = log_prefix(key);
    let base = match tree.get(key.as_bytes()) {
        Ok(Some(base)) => base,
        Ok(None) => {
            for k in tree.scan_prefix(&prefix).keys().flatten() {
                let _ = tree.remove(k);
            }
            return None;
        }
        Err(_) => return None,
    };
    let log = tree.scan_prefix(&prefix).values().flatten().map(|v| v.to_vec()).collect();
    Some(Stored { base: base.to_vec(), log })
}

/// Removes state key `key`'s base and log.
pub fn remove(tree: &Tree, key: &str) {
    let _ = tree.remove(key.as_bytes());
    for k in tree.scan_prefix(log_prefix(key)).keys().flatten() {
        let _ = tree.remove(k);
    }
}
