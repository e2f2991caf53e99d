//! The issuance record parser: any line is a record or a clear error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_795_341_662, 0).unwrap();
    match monitor::issuance::record::parse_record(line, now) {
        Ok(r) => {
            let _ = r.secret_id();
        }
        Err(e) => {
            // The error is a sentence, never empty.
            assert!(!e.to_string().is_empty());
        }
    }
});
