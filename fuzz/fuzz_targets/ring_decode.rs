//! The ring-buffer record decoder: any bytes decode or give an error, and
//! the helpers the enricher applies to decoded records hold up.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::observer::decode::{cstr, decode, split_nul, RawEvent};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(ev) => {
            let _ = format!("{ev:?}");
            match &ev {
                RawEvent::Exec(e, argv, envp) => {
                    let _ = cstr(&e.filename, e.filename_len);
                    let _ = split_nul(argv.bytes());
                    let _ = split_nul(envp.bytes());
                }
                RawEvent::Read(_, d) | RawEvent::Write(_, d, _) => {
                    let _ = split_nul(d.bytes());
                }
                _ => {}
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
