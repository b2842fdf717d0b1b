//! A data frame's payload (NDJSON lines or Arrow IPC) decoded into the `process_events` table:
//! every row is decoded or rejected with a row error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};
use vedette_schemas::tables::Catalog;

fuzz_target!(|data: &[u8]| {
    let Some((&first, payload)) = data.split_first() else { return };
    let catalog = Catalog::builtin();
    let table = catalog.get("process_events").expect("built-in table");
    let encoding = if first & 1 == 0 { Encoding::Ndjson } else { Encoding::Arrow };
    let frame = DataFrame { seq: 1, table: "process_events", encoding, payload };
    let id = Identity { sensor_id: "fuzz", tenant: "fuzz", default_host: Some("h"), trust_rows: false };
    let _ = decode_frame(table, &frame, &id, 65_536);
});
