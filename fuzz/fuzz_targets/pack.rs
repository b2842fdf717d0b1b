//! A rule pack posted to the API (`POST /api/v1/rules/validate`, `…/test`) by an analyst, or
//! read from the packs directory: any bytes parse or are refused with an error, never panic;
//! the position read from the error never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vedette_pipelines::rule::Pack;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Pack::from_yaml("fuzz", text) {
        let _ = e.position();
    }
});
