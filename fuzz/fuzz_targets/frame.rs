//! A stream of bytes from a sensor (or an edge): frame headers, control messages, data and
//! alerts frame headers must be parsed or refused with an error, never panic, whatever the
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vedette_schemas::frame::{self, Control, FrameType, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let header: [u8; HEADER_LEN] = rest[..HEADER_LEN].try_into().expect("header length");
        let Ok((len, ty)) = frame::parse_header(header, 1 << 20) else { return };
        let body = &rest[HEADER_LEN..];
        let body = &body[..len.min(body.len())];
        match ty {
            FrameType::DataNdjson | FrameType::DataArrow => {
                let _ = frame::parse_data(ty, body);
            }
            FrameType::Alerts => {
                if let Ok((seq, lines)) = frame::parse_alerts(body) {
                    assert!(seq > 0);
                    // What parses must encode back to the same body.
                    let mut again = Vec::new();
                    frame::encode_alerts(&mut again, seq, lines);
                    assert_eq!(&again[HEADER_LEN..], body);
                }
            }
            _ => {
                if let Ok(msg) = Control::decode(ty, body) {
                    // What decodes must encode again.
                    let _ = msg.to_frame();
                }
            }
        }
        rest = &rest[(HEADER_LEN + len).min(rest.len())..];
    }
});
