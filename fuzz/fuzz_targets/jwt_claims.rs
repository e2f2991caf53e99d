//! JWT claims: any token parses or is refused, and what parses can be
//! turned into an identity.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = monitor::issuance::jwt::parse_jwt(data) {
        let _ = c.to_identity();
        let _ = c.is_expired(chrono::DateTime::from_timestamp(1_795_341_662, 0).unwrap());
    }
});
