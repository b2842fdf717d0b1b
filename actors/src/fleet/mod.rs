//! The fleet side of ingest: commands to sensors, liveness and silence alerts, and the
//! certificate issuer that enrollment and renewal use.
//!
//! * [`commands`]: the durable per-sensor command queue.
//! * [`liveness`]: activity recorded by sessions, the monitor actor, sensor statuses.
//! * [`taps`]: live copies of a sensor's raw telemetry for the API.

pub mod commands;
pub mod liveness;
pub mod taps;

use futures::future::BoxFuture;
use vedette_schemas::fleet::{CertificateIssued, Enroll};

use crate::tls::PeerIdentity;

/// Signs sensor certificates. The engine implements it with its CA (the development CA, or
/// `fleet.ca_key`); an engine without a CA key has none, and enrollment and renewal are off.
pub trait CertIssuer: Send + Sync + 'static {
    /// Enrolls a sensor: checks and spends the token, signs the CSR with the token's tenant,
    /// registers the sensor. `Err` carries the refusal to tell the sensor.
    fn enroll<'a>(&'a self, request: &'a Enroll, remote: &'a str) -> BoxFuture<'a, Result<CertificateIssued, String>>;

    /// Renews the certificate of a connected sensor; the CSR's CN must be the sensor's id.
    fn renew<'a>(&'a self, peer: &'a PeerIdentity, csr: &'a str) -> BoxFuture<'a, Result<CertificateIssued, String>>;
}

/// Sends a queued command to its sensor now if it is connected (otherwise it waits for the
/// sensor's next session).
pub fn dispatch(
    commands: &commands::Commands,
    sessions: &crate::sessions::Sessions,
    rec: &commands::CommandRecord,
) -> crate::Result<bool> {
    if !sessions.is_connected(&rec.sensor_id) {
        return Ok(false);
    }
    sessions.send(&rec.sensor_id, vedette_schemas::frame::Control::Command(rec.command()));
    commands.sent(&rec.sensor_id, &rec.id)?;
    Ok(true)
}
