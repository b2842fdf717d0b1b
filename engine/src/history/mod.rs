//! The local alert history: every alert, fed from its own spool, kept within an age and byte
//! bound, queried (filters, cursor pages), exported and streamed by the API.
//!
//! * [`store`]: the store: segments, the id map, queries, retention.
//! * [`segment`]: one segment file and its index.
//! * [`query`]: filters, parameter validation and cursors (pure).
//! * [`triage`]: each alert's triage state (new, acknowledged, resolved), who, when, why.
//! * [`sink`]: the connector the internal `history` sink delivers through.

pub mod query;
pub mod segment;
pub mod sink;
pub mod store;
pub mod triage;

pub use store::{Dir, History, Retention, Stored};
