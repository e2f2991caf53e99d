//! BTF reading (the `btf-rs` parse behind `sensors::btf`): any bytes parse
//! or give an error, and the lookups the sensors make in what parsed do not
//! panic (the adapter contains a parser panic as an error: one reaching
//! here is a bug there).
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::sensors::btf::{kernel_offsets, uring_offsets, Btf};

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        for (s, m) in [
            ("task_struct", "pid"),
            ("file", "f_inode"),
            ("inode", "i_ino"),
            ("a", "b.c"),
        ] {
            let _ = btf.find_struct(s);
            let _ = btf.member_offset(s, m);
            let _ = btf.member_path(s, m);
            let _ = btf.member_type_name(s, m);
        }
        let _ = kernel_offsets(&btf);
        let _ = uring_offsets(&btf);
    }
});
