//! Vault audit pairing: any sequence of lines keeps the pairer within its
//! cap, and every line is paired, kept or refused with a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::issuance::vault::VaultPairer;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut p = VaultPairer::new(4);
    for line in text.lines() {
        if let Err(e) = p.push(line) {
            assert!(!e.is_empty());
        }
        assert!(p.unpaired() <= 4);
    }
});
