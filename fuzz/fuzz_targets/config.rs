//! The configuration file: any text is a configuration or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = monitor::config::FileConfig::parse(text, std::path::Path::new("fuzz.toml")) {
        assert!(!format!("{e:#}").is_empty());
    }
});
