//! Rule sync: an edge with `rules.follow_upstream` runs its upstream's rule set. The upstream
//! sends RULES (its applied packs, with their signatures) over the forward connection; the
//! edge checks every signature against its **own** trusted keys, applies the set atomically
//! like a local apply, and answers RULES_APPLIED with what it runs (and why it refused, if it
//! did — it then keeps its previous set).

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tracing::{info, warn};
use vedette_config::Config;
use vedette_pipelines::RuleError;
use vedette_pipelines::rule::Pack;
use vedette_pipelines::signature;
use vedette_schemas::fleet::{RuleSet, RulesApplied};
use vedette_schemas::frame::Control;

use crate::error::Result;
use crate::ruleset::{LoadedPack, RuleManager, trusted_keys};

/// A rule set received from the upstream, and where to send the answer.
pub type Received = (RuleSet, mpsc::UnboundedSender<Control>);

/// Parses the set's packs and checks their signatures against `config`'s trusted keys (all
/// or nothing). The built-in pack (no YAML) is this engine's own copy.
pub fn verify(config: &Config, set: &RuleSet) -> Result<Vec<LoadedPack>> {
    let trusted = trusted_keys(config)?;
    let mut out = Vec::new();
    for p in &set.packs {
        let Some(yaml) = &p.yaml else {
            out.push(LoadedPack { pack: Pack::builtin(), source: None, signature: None });
            continue;
        };
        let pack = Pack::from_yaml(&format!("upstream:{}", p.name), yaml)?;
        let checked = match &p.signature {
            Some(sig) => signature::verify(&pack, sig, &trusted).map(|_| ()),
            None => Err(RuleError::Signature {
                pack: p.name.clone(),
                reason: "the upstream sent it without a signature".into(),
            }),
        };
        match checked {
            Ok(()) => {}
            Err(e) if config.rules.allow_unsigned => {
                warn!(pack = %p.name, error = %e, "Applying an upstream pack without a valid signature (rules.allow_unsigned).");
            }
            Err(e) => return Err(e.into()),
        }
        out.push(LoadedPack { pack, source: Some(yaml.clone()), signature: p.signature.clone() });
    }
    Ok(out)
}

/// Applies every rule set the forward connection receives, in order, answering each.
pub async fn run(manager: Arc<Mutex<RuleManager>>, mut received: mpsc::UnboundedReceiver<Received>) {
    while let Some((set, answer)) = received.recv().await {
        let mut m = manager.lock().await;
        let error = match m.apply_synced(&set).await {
            Ok(report) => {
                info!(packs = ?report.packs, "Rule set of the upstream applied.");
                None
            }
            Err(e) => Some(e.to_string()),
        };
        let packs = m.status().packs;
        drop(m);
        let _ = answer.send(Control::RulesApplied(RulesApplied { packs, error }));
    }
}
