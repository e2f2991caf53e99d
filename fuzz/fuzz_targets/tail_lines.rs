//! The tailer's line splitting: bytes fed in any chunks give the same
//! lines and skips as the same bytes fed at once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::issuance::tail::Tailer;

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, data)) = data.split_first() else {
        return;
    };
    // A small line cap so that over-long lines are reached.
    let max = 1 + (cut_seed as usize % 48);
    let mut whole = Tailer::new("/nonexistent/fuzz").with_max_line(max);
    let lines = whole.feed_bytes(data);
    let skipped = whole.take_skipped();

    let mut parts = Tailer::new("/nonexistent/fuzz").with_max_line(max);
    let mut got = Vec::new();
    let step = 1 + (cut_seed as usize % 7);
    for chunk in data.chunks(step) {
        got.extend(parts.feed_bytes(chunk));
    }
    assert_eq!(lines, got, "chunking changed the lines");
    assert_eq!(skipped, parts.take_skipped(), "chunking changed the skips");
    for l in &lines {
        assert!(l.text.len() <= max, "a line over the cap was returned");
        assert!(!l.text.contains('\n'));
        assert!(!l.text.trim().is_empty());
    }
});
