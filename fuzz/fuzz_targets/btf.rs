//! BTF reading: any bytes parse or give an error, and lookups in what
//! parsed (the ones the sensors make) do not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::sensors::btf::Btf;

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
        }
    }
});
