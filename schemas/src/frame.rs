//! The vedette wire protocol v1, without any I/O (see `docs/protocol.md`).
//!
//! Every stream carries frames: `len: u32 BE | type: u8 | body[len - 1]`. Control frames
//! (types below 0x10) carry one JSON object; data frames carry a binary header
//! (`seq: u64 BE | table_len: u8 | table`) followed by the payload.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchemaError};

/// ALPN protocol id negotiated by TLS.
pub const ALPN: &[u8] = b"vedette/1";
/// Protocol version carried in HELLO.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes of the frame header (length + type).
pub const HEADER_LEN: usize = 5;
/// Default maximum frame length (type byte + body).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;

/// QUIC application error codes used when closing a connection or resetting a stream.
pub mod close_code {
    /// Normal close.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (bad first frame, data on the control stream …).
    pub const PROTOCOL_VIOLATION: u32 = 1;
    /// HELLO claimed an identity other than the certificate's.
    pub const IDENTITY_MISMATCH: u32 = 2;
    /// HELLO asked for a protocol version the engine does not speak.
    pub const UNSUPPORTED_VERSION: u32 = 3;
    /// The engine is shutting down; reconnect later.
    pub const SHUTTING_DOWN: u32 = 4;
    /// No HELLO arrived in time.
    pub const HELLO_TIMEOUT: u32 = 6;
    /// The sensor or its certificate was revoked; do not reconnect with this certificate.
    pub const REVOKED: u32 = 8;
    /// The registry refused the HELLO (e.g. the sensor id belongs to another tenant).
    pub const REFUSED: u32 = 9;
    /// A connection on the ingest ALPN presented no client certificate.
    pub const CERTIFICATE_REQUIRED: u32 = 10;
    /// An enrollment was refused (see the ERROR message: bad, used-up, expired token …).
    pub const ENROLLMENT_REFUSED: u32 = 11;
    /// A data stream was reset because a frame exceeded the maximum size.
    pub const FRAME_TOO_LARGE: u32 = 0x10;
    /// A data stream was reset because its framing could not be parsed.
    pub const MALFORMED_FRAME: u32 = 0x11;
}

/// Frame type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Sensor → engine, first frame on the control stream.
    Hello = 0x01,
    /// Engine → sensor, answer to HELLO.
    Welcome = 0x02,
    /// Either direction, keep-alive and liveness.
    Heartbeat = 0x03,
    /// Engine → sensor: a data frame's effects are durable.
    Ack = 0x04,
    /// Engine → sensor: rows of a data frame were rejected.
    RowErrors = 0x05,
    /// Engine → sensor: a frame or the session failed.
    Error = 0x06,
    /// Either direction: the sender is closing the session.
    Goodbye = 0x07,
    /// Engine → sensor: a command (observe level, config, certificate renewal).
    Command = 0x08,
    /// Sensor → engine: the outcome of a command.
    CommandResult = 0x09,
    /// Sensor → engine: a CSR renewing the sensor's certificate.
    Csr = 0x0a,
    /// Engine → sensor: an issued certificate (renewal or enrollment).
    Certificate = 0x0b,
    /// Upstream engine → edge engine: the upstream's applied rule set.
    Rules = 0x0c,
    /// Edge engine → upstream engine: the rule set the edge runs after a RULES.
    RulesApplied = 0x0d,
    /// Sensor → engine, enrollment ALPN only: token + CSR.
    Enroll = 0x20,
    /// Sensor → engine: NDJSON rows of one table.
    DataNdjson = 0x10,
    /// Sensor → engine: Arrow IPC stream of one table.
    DataArrow = 0x11,
    /// Edge → upstream engine: forwarded alerts (NDJSON), on a data stream.
    Alerts = 0x12,
}

impl FrameType {
    /// Maps a type byte.
    pub fn from_byte(b: u8) -> Result<Self> {
        Ok(match b {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Heartbeat,
            0x04 => Self::Ack,
            0x05 => Self::RowErrors,
            0x06 => Self::Error,
            0x07 => Self::Goodbye,
            0x08 => Self::Command,
            0x09 => Self::CommandResult,
            0x0a => Self::Csr,
            0x0b => Self::Certificate,
            0x0c => Self::Rules,
            0x0d => Self::RulesApplied,
            0x20 => Self::Enroll,
            0x10 => Self::DataNdjson,
            0x11 => Self::DataArrow,
            0x12 => Self::Alerts,
            other => {
                return Err(SchemaError::MalformedFrame { reason: format!("unknown frame type 0x{other:02x}") });
            }
        })
    }

    /// True for the frame types of a data stream (telemetry and forwarded alerts).
    pub fn is_data(self) -> bool {
        matches!(self, Self::DataNdjson | Self::DataArrow | Self::Alerts)
    }
}

/// Parses a frame header; returns the body length (after the type byte) and the type.
pub fn parse_header(header: [u8; HEADER_LEN], max_frame_bytes: u32) -> Result<(usize, FrameType)> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len == 0 {
        return Err(SchemaError::MalformedFrame { reason: "length 0 (a frame has at least its type byte)".into() });
    }
    if len > max_frame_bytes {
        return Err(SchemaError::FrameTooLarge { len: len.into(), max: max_frame_bytes.into() });
    }
    let ty = FrameType::from_byte(header[4])?;
    Ok((len as usize - 1, ty))
}

/// Encodes a whole frame (header + body) into `out`.
pub fn encode_frame(out: &mut Vec<u8>, ty: FrameType, body: &[u8]) {
    let len = u32::try_from(body.len() + 1).expect("frames are far smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(ty as u8);
    out.extend_from_slice(body);
}

/// Payload encoding of a data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Newline-delimited JSON objects.
    Ndjson,
    /// Arrow IPC stream format.
    Arrow,
}

/// A parsed data frame, borrowing the payload.
#[derive(Debug, Clone, Copy)]
pub struct DataFrame<'a> {
    /// Per-sensor sequence number (strictly increasing, starting at 1).
    pub seq: u64,
    /// Table the rows belong to.
    pub table: &'a str,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Encodes a data frame.
pub fn encode_data(out: &mut Vec<u8>, encoding: Encoding, seq: u64, table: &str, payload: &[u8]) {
    let ty = match encoding {
        Encoding::Ndjson => FrameType::DataNdjson,
        Encoding::Arrow => FrameType::DataArrow,
    };
    let table_len = u8::try_from(table.len()).expect("table names are shorter than 256 bytes");
    let len = u32::try_from(1 + 8 + 1 + table.len() + payload.len()).expect("frames are far smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(ty as u8);
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(table_len);
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(payload);
}

/// Parses the body of a data frame.
pub fn parse_data(ty: FrameType, body: &[u8]) -> Result<DataFrame<'_>> {
    let encoding = match ty {
        FrameType::DataNdjson => Encoding::Ndjson,
        FrameType::DataArrow => Encoding::Arrow,
        other => {
            return Err(SchemaError::MalformedFrame {
                reason: format!("frame type {other:?} is not allowed on a data stream"),
            });
        }
    };
    let malformed = |reason: &str| SchemaError::MalformedFrame { reason: reason.into() };
    if body.len() < 9 {
        return Err(malformed("data frame shorter than its header (seq + table length)"));
    }
    let seq = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    if seq == 0 {
        return Err(malformed("sequence number 0 is not allowed (sequences start at 1)"));
    }
    let tlen = body[8] as usize;
    let table_bytes = body.get(9..9 + tlen).ok_or_else(|| malformed("table name runs past the end of the frame"))?;
    let table = std::str::from_utf8(table_bytes).map_err(|_| malformed("table name is not UTF-8"))?;
    Ok(DataFrame { seq, table, encoding, payload: &body[9 + tlen..] })
}

/// Encodes an ALERTS frame: sequence number, then one forwarded alert per line.
pub fn encode_alerts(out: &mut Vec<u8>, seq: u64, ndjson: &[u8]) {
    let len = u32::try_from(1 + 8 + ndjson.len()).expect("frames are far smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(FrameType::Alerts as u8);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(ndjson);
}

/// Parses the body of an ALERTS frame: `(seq, ndjson)`.
pub fn parse_alerts(body: &[u8]) -> Result<(u64, &[u8])> {
    let malformed = |reason: &str| SchemaError::MalformedFrame { reason: reason.into() };
    let seq = body.get(..8).ok_or_else(|| malformed("alerts frame shorter than its sequence number"))?;
    let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
    if seq == 0 {
        return Err(malformed("sequence number 0 is not allowed (sequences start at 1)"));
    }
    Ok((seq, &body[8..]))
}

/// Reads only the sequence number of a data frame body, if it has one.
pub fn peek_seq(body: &[u8]) -> Option<u64> {
    body.get(..8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))).filter(|s| *s != 0)
}

/// Sensor → engine, first message on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Must be 1.
    pub protocol: u32,
    /// Sensor software name/version, e.g. `vedette-sensor/0.1.0`.
    pub sensor_version: String,
    /// Host name; fills `host` in rows that do not carry one.
    #[serde(default)]
    pub host: Option<String>,
    /// Optional claimed sensor id; if present it must equal the certificate's.
    #[serde(default)]
    pub sensor_id: Option<String>,
    /// Schema versions the sensor was built against, by table (informational in v1).
    #[serde(default)]
    pub schemas: std::collections::BTreeMap<String, u32>,
    /// Lowest sequence number the sensor may still send in this session: every frame below it
    /// is acknowledged or abandoned (e.g. lost in a sensor restart). 0 = unknown.
    #[serde(default)]
    pub low_seq: u64,
}

/// Engine → sensor, answer to HELLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Identity taken from the certificate.
    pub sensor_id: String,
    /// Tenant taken from the certificate.
    pub tenant: String,
    /// Every frame with `seq <= acked_through` is durable; resend only later ones.
    pub acked_through: u64,
    /// Highest sequence number ever applied; a sensor without saved state starts above it.
    pub highest_seq: u64,
    /// Largest frame (type byte + body) the engine accepts.
    pub max_frame_bytes: u32,
    /// Largest number of rows one data frame may carry.
    pub max_frame_rows: u32,
    /// How often the sensor should send HEARTBEAT.
    pub heartbeat_interval_ms: u64,
    /// Tables the engine accepts.
    pub tables: Vec<String>,
    /// COMMAND messages that follow right after this WELCOME (queued while the sensor was
    /// away): a sensor finishing its work answers them before it says GOODBYE.
    #[serde(default)]
    pub commands: u32,
}

/// Either direction: liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's wall clock, µs since epoch.
    pub ts: i64,
}

/// Engine → sensor: frame `seq` is durable, and so is every frame `<= through`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The frame acknowledged.
    pub seq: u64,
    /// Highest sequence number below which everything is acknowledged.
    pub through: u64,
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowError {
    /// 0-based row index inside the frame (NDJSON: non-empty line number).
    pub row: u32,
    /// Offending column, if the problem is one column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Human-readable reason.
    pub reason: String,
}

/// Engine → sensor: some rows of frame `seq` were rejected; the others were accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowErrors {
    /// Frame sequence number.
    pub seq: u64,
    /// Table of the frame.
    pub table: String,
    /// Rows accepted.
    pub accepted: u32,
    /// Rows rejected.
    pub rejected: u32,
    /// Details for the first rejected rows (at most 100).
    pub errors: Vec<RowError>,
}

/// Engine → sensor: an error about a frame or the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Stable machine-readable code (see `docs/protocol.md`).
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Sequence number of the frame concerned, if any. Such a frame is consumed: do not resend it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Either direction: the sender is closing the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why.
    pub reason: String,
}

/// A decoded control-stream message.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`RowErrors`].
    RowErrors(RowErrors),
    /// See [`ErrorMsg`].
    Error(ErrorMsg),
    /// See [`Goodbye`].
    Goodbye(Goodbye),
    /// See [`crate::fleet::Command`].
    Command(crate::fleet::Command),
    /// See [`crate::fleet::CommandResult`].
    CommandResult(crate::fleet::CommandResult),
    /// See [`crate::fleet::CertificateRequest`].
    Csr(crate::fleet::CertificateRequest),
    /// See [`crate::fleet::CertificateIssued`].
    Certificate(crate::fleet::CertificateIssued),
    /// See [`crate::fleet::Enroll`].
    Enroll(crate::fleet::Enroll),
    /// Upstream → edge: the applied rule set.
    Rules(crate::fleet::RuleSet),
    /// Edge → upstream: what the edge runs now.
    RulesApplied(crate::fleet::RulesApplied),
}

impl Control {
    /// Decodes a control frame body.
    pub fn decode(ty: FrameType, body: &[u8]) -> Result<Self> {
        fn de<T: serde::de::DeserializeOwned>(kind: &'static str, body: &[u8]) -> Result<T> {
            serde_json::from_slice(body).map_err(|e| SchemaError::MalformedControl { kind, reason: e.to_string() })
        }
        Ok(match ty {
            FrameType::Hello => Self::Hello(de("HELLO", body)?),
            FrameType::Welcome => Self::Welcome(de("WELCOME", body)?),
            FrameType::Heartbeat => Self::Heartbeat(de("HEARTBEAT", body)?),
            FrameType::Ack => Self::Ack(de("ACK", body)?),
            FrameType::RowErrors => Self::RowErrors(de("ROW_ERRORS", body)?),
            FrameType::Error => Self::Error(de("ERROR", body)?),
            FrameType::Goodbye => Self::Goodbye(de("GOODBYE", body)?),
            FrameType::Command => Self::Command(de("COMMAND", body)?),
            FrameType::CommandResult => Self::CommandResult(de("COMMAND_RESULT", body)?),
            FrameType::Csr => Self::Csr(de("CSR", body)?),
            FrameType::Certificate => Self::Certificate(de("CERTIFICATE", body)?),
            FrameType::Rules => Self::Rules(de("RULES", body)?),
            FrameType::RulesApplied => Self::RulesApplied(de("RULES_APPLIED", body)?),
            FrameType::Enroll => Self::Enroll(de("ENROLL", body)?),
            FrameType::DataNdjson | FrameType::DataArrow | FrameType::Alerts => {
                return Err(SchemaError::MalformedFrame {
                    reason: "data and alerts frames must be sent on a data (unidirectional) stream".into(),
                });
            }
        })
    }

    /// Encodes this message as a whole frame appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (ty, body) = match self {
            Self::Hello(m) => (FrameType::Hello, serde_json::to_vec(m)),
            Self::Welcome(m) => (FrameType::Welcome, serde_json::to_vec(m)),
            Self::Heartbeat(m) => (FrameType::Heartbeat, serde_json::to_vec(m)),
            Self::Ack(m) => (FrameType::Ack, serde_json::to_vec(m)),
            Self::RowErrors(m) => (FrameType::RowErrors, serde_json::to_vec(m)),
            Self::Error(m) => (FrameType::Error, serde_json::to_vec(m)),
            Self::Goodbye(m) => (FrameType::Goodbye, serde_json::to_vec(m)),
            Self::Command(m) => (FrameType::Command, serde_json::to_vec(m)),
            Self::CommandResult(m) => (FrameType::CommandResult, serde_json::to_vec(m)),
            Self::Csr(m) => (FrameType::Csr, serde_json::to_vec(m)),
            Self::Certificate(m) => (FrameType::Certificate, serde_json::to_vec(m)),
            Self::Rules(m) => (FrameType::Rules, serde_json::to_vec(m)),
            Self::RulesApplied(m) => (FrameType::RulesApplied, serde_json::to_vec(m)),
            Self::Enroll(m) => (FrameType::Enroll, serde_json::to_vec(m)),
        };
        encode_frame(out, ty, &body.expect("control messages always serialize"));
    }

    /// Encodes this message into a fresh buffer.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(frame: &[u8]) -> ([u8; HEADER_LEN], &[u8]) {
        (frame[..HEADER_LEN].try_into().unwrap(), &frame[HEADER_LEN..])
    }

    #[test]
    fn data_frame_round_trips() {
        let mut buf = Vec::new();
        encode_data(&mut buf, Encoding::Ndjson, 42, "process_events", b"{\"a\":1}\n");
        let (h, body) = split(&buf);
        let (len, ty) = parse_header(h, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(len, body.len());
        let f = parse_data(ty, body).unwrap();
        assert_eq!((f.seq, f.table, f.encoding), (42, "process_events", Encoding::Ndjson));
        assert_eq!(f.payload, b"{\"a\":1}\n");
    }

    #[test]
    fn control_round_trips() {
        let msg = Control::Ack(Ack { seq: 7, through: 5 });
        let buf = msg.to_frame();
        let (h, body) = split(&buf);
        let (_, ty) = parse_header(h, 1024).unwrap();
        assert_eq!(Control::decode(ty, body).unwrap(), msg);
    }

    #[test]
    fn oversized_zero_and_unknown_frames_are_errors() {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&2000u32.to_be_bytes());
        h[4] = 0x10;
        assert!(matches!(parse_header(h, 1024), Err(SchemaError::FrameTooLarge { len: 2000, max: 1024 })));
        h[..4].copy_from_slice(&0u32.to_be_bytes());
        assert!(matches!(parse_header(h, 1024), Err(SchemaError::MalformedFrame { .. })));
        h[..4].copy_from_slice(&10u32.to_be_bytes());
        h[4] = 0x7f;
        let err = parse_header(h, 1024).unwrap_err().to_string();
        assert!(err.contains("unknown frame type 0x7f"), "{err}");
    }

    #[test]
    fn truncated_data_headers_are_errors() {
        assert!(parse_data(FrameType::DataNdjson, &[0, 0, 0]).is_err());
        let mut body = 5u64.to_be_bytes().to_vec();
        body.push(200);
        body.extend_from_slice(b"short");
        let err = parse_data(FrameType::DataNdjson, &body).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
        let zero = [0u8; 9];
        assert!(parse_data(FrameType::DataArrow, &zero).unwrap_err().to_string().contains("sequence number 0"));
    }

    #[test]
    fn garbage_control_body_names_the_message() {
        let err = Control::decode(FrameType::Hello, b"not json").unwrap_err().to_string();
        assert!(err.starts_with("malformed HELLO message"), "{err}");
        let err = Control::decode(FrameType::Hello, br#"{"protocol":1,"sensor_version":"x","evil":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `evil`"), "{err}");
    }
}

#[cfg(test)]
mod doc_example {
    use super::*;

    /// The worked example of `docs/protocol.md` §8, byte for byte.
    #[test]
    fn protocol_doc_worked_example_matches_the_encoder() {
        let hex = "00 00 00 2c 10 00 00 00 00 00 00 00 01 0b 61 75 74 68 5f 65 76 65 6e 74 73 \
                   7b 22 74 73 22 3a 31 2c 22 75 73 65 72 22 3a 22 72 6f 6f 74 22 7d 0a";
        let bytes: Vec<u8> = hex.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
        let mut ours = Vec::new();
        encode_data(&mut ours, Encoding::Ndjson, 1, "auth_events", b"{\"ts\":1,\"user\":\"root\"}\n");
        assert_eq!(ours, bytes);
        let hb = Control::Heartbeat(Heartbeat { ts: 0 }).to_frame();
        assert_eq!(hb, [0, 0, 0, 9, 3, b'{', b'"', b't', b's', b'"', b':', b'0', b'}']);
    }
}
