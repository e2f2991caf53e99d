//! Struct member offsets from the kernel's BTF (BPF Type Format).
//!
//! The eBPF programs are built without CO-RE, so they walk kernel structs
//! (`task_struct -> files -> fdtable -> file -> inode`, `file -> socket ->
//! sock`) with `bpf_probe_read_kernel` at byte offsets the agent passes in
//! through [`KernelOffsets`]. This module computes those offsets from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Parsing is the `btf-rs` crate's; what is here is the lookup the sensors
//! need on top of it: a struct by name, a (dotted) member path through
//! anonymous struct/union members and typedef/modifier chains, at a byte
//! offset. The BTF is memory-mapped (types decoded on demand, little heap);
//! where the kernel does not allow mapping its BTF file, and for bytes, it is
//! first copied into an anonymous memory file.

use std::io::Write as _;
use std::os::fd::FromRawFd as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use btf_rs::{Backend, Type};
use monitor_common::KernelOffsets;

/// Deepest chain of typedefs/modifiers or nested anonymous members followed
/// before the BTF is declared cyclic.
const MAX_DEPTH: usize = 64;

/// Everything that can go wrong reading BTF or looking up offsets in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read or is not valid BTF.
    #[error("reading BTF from {}: {error}", path.display())]
    File { path: PathBuf, error: Box<BtfError> },
    /// The BTF data is malformed (the parser's own message).
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// The parser panicked on malformed data (contained, see [`contain`]).
    #[error("malformed BTF: the parser failed ({0})")]
    ParserPanic(String),
    /// A typedef/modifier chain or nested anonymous members that never end.
    #[error("BTF type chain too deep (cyclic?)")]
    TooDeep,
    /// No STRUCT with this name (and a non-zero size).
    #[error("struct {0} not found in BTF")]
    StructNotFound(String),
    /// The struct exists but has no such member, even in anonymous members.
    #[error("member {member} not found in struct {strukt}")]
    MemberNotFound { strukt: String, member: String },
    /// The member does not start on a byte boundary (a packed bitfield).
    #[error(
        "member {member} of struct {strukt} is at bit offset {bit_offset}, not at a byte boundary"
    )]
    NotByteAligned {
        strukt: String,
        member: String,
        bit_offset: u64,
    },
    /// A dotted path tried to descend into a member that is not a struct/union.
    #[error("member {member} of struct {strukt} is a {kind}, not a struct or union, so {rest} cannot be looked up in it")]
    NotComposite {
        strukt: String,
        member: String,
        kind: &'static str,
        rest: String,
    },
    /// An offset that does not fit in `u32`.
    #[error("offset of {member} in struct {strukt} does not fit in 32 bits")]
    Overflow { strukt: String, member: String },
    /// A layout assumption the eBPF programs rely on does not hold.
    #[error("unexpected kernel layout: {0}")]
    Layout(String),
}

impl From<btf_rs::Error> for BtfError {
    fn from(e: btf_rs::Error) -> Self {
        BtfError::Malformed(e.to_string())
    }
}

/// Runs `f` (a `btf-rs` call on data we did not write), turning a panic on
/// malformed input into an error: the agent must say its BTF is bad, not
/// die. (The crate bounds-checks its reads; this is the belt to its braces.)
fn contain<T>(f: impl FnOnce() -> Result<T, BtfError>) -> Result<T, BtfError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(BtfError::ParserPanic(msg))
    })
}

/// A parsed BTF blob.
pub struct Btf(btf_rs::Btf);

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, last) = self.0.base().type_id_range();
        write!(f, "Btf {{ types: {first}..={last} }}")
    }
}

/// A struct or union found by [`Btf::find_struct`] or a member's type.
type Composite = btf_rs::Struct;

impl Btf {
    /// Reads and parses a BTF file, e.g. `/sys/kernel/btf/vmlinux`; every
    /// error names the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf, BtfError> {
        let path = path.as_ref();
        if let Ok(b) = Btf::map(path) {
            return Ok(b);
        }
        // Kernels before 6.16 cannot map /sys/kernel/btf/vmlinux: copy it
        // into memory that can be (a file that is not BTF fails here too).
        std::fs::File::open(path)
            .map_err(|e| BtfError::Malformed(e.to_string()))
            .and_then(|mut f| Btf::via_memfd(|m| std::io::copy(&mut f, m).map(drop)))
            .map_err(|error| BtfError::File {
                path: path.to_path_buf(),
                error: Box::new(error),
            })
    }

    /// Parses a raw BTF blob (header, type section, string section), in
    /// either byte order, the way [`from_file`](Self::from_file) does.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::via_memfd(|m| m.write_all(data))
    }

    /// `btf-rs` with its memory-mapped backend: types are decoded when
    /// looked up, so the heap stays small (its cached backend holds every
    /// type and string: ~40 MiB for vmlinux).
    fn map(path: &Path) -> Result<Btf, BtfError> {
        contain(|| {
            Ok(Btf(btf_rs::Btf::from_file_with_backend(
                path,
                Backend::Mmap,
            )?))
        })
    }

    /// Writes the BTF into an anonymous memory file with `fill` and maps it.
    fn via_memfd(
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<Btf, BtfError> {
        let io = |e: std::io::Error| BtfError::Malformed(e.to_string());
        // SAFETY: the name is a NUL-terminated literal; the result is checked.
        let fd = unsafe { libc::memfd_create(c"btf".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let mut mem = unsafe { std::fs::File::from_raw_fd(fd) };
        fill(&mut mem).map_err(io)?;
        if mem.metadata().map_err(io)?.len() == 0 {
            return Err(BtfError::Malformed("empty".into()));
        }
        Btf::map(Path::new(&format!("/proc/self/fd/{fd}")))
    }

    /// The first STRUCT named `name` with a non-zero size (a zero-sized one
    /// is a declaration's placeholder).
    pub fn find_struct(&self, name: &str) -> Result<Composite, BtfError> {
        contain(|| {
            for t in self.0.resolve_types_by_name(name)? {
                if let Type::Struct(s) = t {
                    if s.size() != 0 {
                        return Ok(s);
                    }
                }
            }
            Err(BtfError::StructNotFound(name.to_string()))
        })
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the real type.
    fn resolve(&self, mut t: Type) -> Result<Type, BtfError> {
        for _ in 0..MAX_DEPTH {
            match t {
                Type::Typedef(ref x) => t = self.0.resolve_chained_type(x)?,
                Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                    t = self.0.resolve_chained_type(x)?
                }
                Type::TypeTag(ref x) => t = self.0.resolve_chained_type(x)?,
                t => return Ok(t),
            }
        }
        Err(BtfError::TooDeep)
    }

    /// Finds `member` in the struct/union `s`, descending into anonymous
    /// struct/union members (adding their offsets). Returns the member's bit
    /// offset from the start of `s` and its type.
    fn find_member(
        &self,
        s: &Composite,
        member: &str,
        depth: usize,
    ) -> Result<Option<(u64, Type)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep);
        }
        for m in &s.members {
            let name = self.0.resolve_name(m)?;
            if !name.is_empty() {
                if name == member {
                    return Ok(Some((
                        u64::from(m.bit_offset()),
                        self.0.resolve_chained_type(m)?,
                    )));
                }
                continue;
            }
            if let Type::Struct(inner) | Type::Union(inner) =
                self.resolve(self.0.resolve_chained_type(m)?)?
            {
                if let Some((off, ty)) = self.find_member(&inner, member, depth + 1)? {
                    return Ok(Some((u64::from(m.bit_offset()) + off, ty)));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `member` in `struct struct_name`.
    ///
    /// The struct is the first BTF STRUCT with that name and a non-zero size.
    /// Anonymous struct/union members are searched recursively (their
    /// offsets added), as C does for `union { ... };` inside a struct. A
    /// member that does not start on a byte boundary (a packed bitfield) is
    /// an error; a bitfield that starts on one yields the offset of the byte
    /// holding its first bit.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        self.member_path(struct_name, member)
    }

    /// Byte offset of a dotted member path such as `"f_path.dentry"` in
    /// `struct struct_name`: each component is looked up as in
    /// [`member_offset`](Self::member_offset) within the (typedef/modifier
    /// resolved) struct or union type of the previous one.
    pub fn member_path(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let mut s = self.find_struct(struct_name)?;
        contain(|| {
            let mut where_ = struct_name.to_string();
            let mut total_bits: u64 = 0;
            let mut parts = path.split('.').peekable();
            while let Some(part) = parts.next() {
                let (bits, member_ty) =
                    self.find_member(&s, part, 0)?
                        .ok_or_else(|| BtfError::MemberNotFound {
                            strukt: where_.clone(),
                            member: part.to_string(),
                        })?;
                if bits % 8 != 0 {
                    return Err(BtfError::NotByteAligned {
                        strukt: where_,
                        member: part.to_string(),
                        bit_offset: bits,
                    });
                }
                total_bits += bits;
                if parts.peek().is_some() {
                    s = match self.resolve(member_ty)? {
                        Type::Struct(x) | Type::Union(x) => x,
                        other => {
                            return Err(BtfError::NotComposite {
                                strukt: where_,
                                member: part.to_string(),
                                kind: other.name(),
                                rest: parts.collect::<Vec<_>>().join("."),
                            })
                        }
                    };
                    where_ = format!("{where_}.{part}");
                }
            }
            u32::try_from(total_bits / 8).map_err(|_| BtfError::Overflow {
                strukt: struct_name.to_string(),
                member: path.to_string(),
            })
        })
    }

    /// Name of the type of `member` in `struct struct_name`, after following
    /// typedefs and modifiers (e.g. `"sock_common"`); empty if anonymous.
    pub fn member_type_name(&self, struct_name: &str, member: &str) -> Result<String, BtfError> {
        let s = self.find_struct(struct_name)?;
        contain(|| {
            let (_, ty) =
                self.find_member(&s, member, 0)?
                    .ok_or_else(|| BtfError::MemberNotFound {
                        strukt: struct_name.to_string(),
                        member: member.to_string(),
                    })?;
            Ok(match self.resolve(ty)?.as_btf_type() {
                Some(t) if t.get_name_offset().is_some() => self.0.resolve_name(t)?,
                _ => String::new(),
            })
        })
    }
}

/// Fills [`KernelOffsets`] (with `valid = 1`) from the kernel's BTF.
///
/// Also checks that `struct sock` begins with its `struct sock_common
/// __sk_common` at offset 0, since the eBPF programs read `sock_common`
/// fields straight from a `struct sock *`.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let sk_common = btf.member_offset("sock", "__sk_common")?;
    if sk_common != 0 {
        return Err(BtfError::Layout(format!(
            "sock.__sk_common is at offset {sk_common}, expected 0"
        )));
    }
    let ty = btf.member_type_name("sock", "__sk_common")?;
    if ty != "sock_common" {
        return Err(BtfError::Layout(format!(
            "sock.__sk_common has type {ty:?}, expected struct sock_common"
        )));
    }

    let o = |s: &str, m: &str| btf.member_offset(s, m);
    Ok(KernelOffsets {
        valid: 1,
        task_files: o("task_struct", "files")?,
        files_fdt: o("files_struct", "fdt")?,
        fdt_max_fds: o("fdtable", "max_fds")?,
        fdt_fd: o("fdtable", "fd")?,
        file_f_path: o("file", "f_path")?,
        file_f_inode: o("file", "f_inode")?,
        file_f_flags: o("file", "f_flags")?,
        file_private_data: o("file", "private_data")?,
        path_dentry: o("path", "dentry")?,
        inode_i_mode: o("inode", "i_mode")?,
        inode_i_rdev: o("inode", "i_rdev")?,
        inode_i_ino: o("inode", "i_ino")?,
        inode_i_sb: o("inode", "i_sb")?,
        sb_s_dev: o("super_block", "s_dev")?,
        sb_s_magic: o("super_block", "s_magic")?,
        dentry_d_name: o("dentry", "d_name")?,
        dentry_d_parent: o("dentry", "d_parent")?,
        qstr_name: o("qstr", "name")?,
        socket_sk: o("socket", "sk")?,
        sk_family: o("sock_common", "skc_family")?,
        sk_daddr: o("sock_common", "skc_daddr")?,
        sk_dport: o("sock_common", "skc_dport")?,
        sk_v6_daddr: o("sock_common", "skc_v6_daddr")?,
        qstr_len: o("qstr", "len")?,
        path_mnt: o("path", "mnt")?,
        vfsmount_mnt_root: o("vfsmount", "mnt_root")?,
        mount_mnt: o("mount", "mnt")?,
        mount_mnt_parent: o("mount", "mnt_parent")?,
        mount_mnt_mountpoint: o("mount", "mnt_mountpoint")?,
    })
}

/// The request-struct members of [`UringOffsets`] (`io_kiocb` and the
/// per-op structs at its start), from the kernel's BTF. The tracepoint
/// fields are filled by `tp_format::uring_tracepoint_offsets`; `valid` is
/// left to the caller, once both are known.
pub fn uring_offsets(btf: &Btf) -> Result<monitor_common::UringOffsets, BtfError> {
    // Every op struct is the request's `cmd`, which starts the request.
    let cmd = btf.member_offset("io_kiocb", "cmd")?;
    if cmd != 0 {
        return Err(BtfError::Layout(format!(
            "io_kiocb.cmd is at offset {cmd}, expected 0"
        )));
    }
    let o = |s: &str, m: &str| btf.member_offset(s, m);
    let req_cqe_fd = btf.member_path("io_kiocb", "cqe.fd")?;
    let open_flags = btf.member_path("io_open", "how.flags")?;
    let u = monitor_common::UringOffsets {
        req_cqe_fd,
        rw_addr: o("io_rw", "addr")?,
        rw_len: o("io_rw", "len")?,
        sr_buf: o("io_sr_msg", "buf")?,
        sr_len: o("io_sr_msg", "len")?,
        sr_flags: o("io_sr_msg", "flags")?,
        connect_addr: o("io_connect", "addr")?,
        open_dfd: o("io_open", "dfd")?,
        open_flags,
        splice_fd_in: o("io_splice", "splice_fd_in")?,
        splice_flags: o("io_splice", "flags")?,
        close_fd: o("io_close", "fd")?,
        ..Default::default()
    };
    // The op structs live in the request's 64-byte `cmd`.
    for (name, v) in [
        ("io_rw.len", u.rw_len),
        ("io_sr_msg.flags", u.sr_flags),
        ("io_connect.addr", u.connect_addr),
        ("io_open.how.flags", u.open_flags),
        ("io_splice.flags", u.splice_flags),
        ("io_close.fd", u.close_fd),
    ] {
        if v >= 64 {
            return Err(BtfError::Layout(format!(
                "{name} is at offset {v}, past the request's 64-byte command area"
            )));
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the running kernel exposes its own BTF.
    const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

    /// `btf_header.magic`, and the size of a version 1 header.
    const BTF_MAGIC: u16 = 0xEB9F;
    const HEADER_LEN: usize = 24;

    /// BTF kind numbers (`BTF_KIND_*`), for building test blobs.
    mod kind {
        pub const INT: u8 = 1;
        pub const PTR: u8 = 2;
        pub const ARRAY: u8 = 3;
        pub const STRUCT: u8 = 4;
        pub const UNION: u8 = 5;
        pub const ENUM: u8 = 6;
        pub const FWD: u8 = 7;
        pub const TYPEDEF: u8 = 8;
        pub const VOLATILE: u8 = 9;
        pub const CONST: u8 = 10;
        pub const RESTRICT: u8 = 11;
        pub const FUNC: u8 = 12;
        pub const FUNC_PROTO: u8 = 13;
        pub const VAR: u8 = 14;
        pub const DATASEC: u8 = 15;
        pub const FLOAT: u8 = 16;
        pub const DECL_TAG: u8 = 17;
        pub const TYPE_TAG: u8 = 18;
        pub const ENUM64: u8 = 19;
    }

    impl Btf {
        /// Number of types, not counting the implicit `void` (id 0).
        fn type_count(&self) -> usize {
            let (first, last) = self.0.base().type_id_range();
            (last - first) as usize
        }

        /// Size in bytes of the struct `find_struct` picks.
        fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
            Ok(self.find_struct(name)?.size() as u32)
        }
    }

    /// Builds little-endian BTF blobs for tests. Type ids are handed out in
    /// call order starting at 1.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    /// `(name, type id, offset in bits, bitfield size)`.
    type M<'a> = (&'a str, u32, u32, u32);

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn u32s(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        /// A raw `btf_type` header; returns its id.
        fn ty(&mut self, name: &str, k: u8, kind_flag: bool, vlen: u32, size_or_type: u32) -> u32 {
            let n = self.s(name);
            let info = (u32::from(k) << 24) | (u32::from(kind_flag) << 31) | vlen;
            self.u32s(&[n, info, size_or_type]);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.ty(name, kind::INT, false, 0, size);
            self.u32s(&[size * 8]);
            id
        }

        fn composite(&mut self, k: u8, name: &str, size: u32, kind_flag: bool, ms: &[M]) -> u32 {
            let id = self.ty(name, k, kind_flag, ms.len() as u32, size);
            for &(mname, ty, off, bits) in ms {
                let n = self.s(mname);
                let raw = if kind_flag { (bits << 24) | off } else { off };
                self.u32s(&[n, ty, raw]);
            }
            id
        }

        fn strukt(&mut self, name: &str, size: u32, ms: &[M]) -> u32 {
            self.composite(kind::STRUCT, name, size, false, ms)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A blob exercising every kind, then the structs the tests look up.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let u64_ = b.int("unsigned long long", 8); // 2
        let uint = b.int("unsigned int", 4); // 3

        // One of every other kind, with trailing data of the right size, so
        // that a wrong record size would shift every later id.
        let ptr = b.ty("", kind::PTR, false, 0, int);
        b.ty("", kind::ARRAY, false, 0, 0);
        b.u32s(&[int, uint, 16]);
        let e = b.ty("color", kind::ENUM, false, 3, 4);
        for (i, n) in ["RED", "GREEN", "BLUE"].iter().enumerate() {
            let n = b.s(n);
            b.u32s(&[n, i as u32]);
        }
        b.ty("outer", kind::FWD, false, 0, 0); // a forward decl, not a STRUCT
        b.ty("", kind::VOLATILE, false, 0, int);
        b.ty("", kind::RESTRICT, false, 0, ptr);
        let proto = b.ty("", kind::FUNC_PROTO, false, 2, int);
        for n in ["a", "b"] {
            let n = b.s(n);
            b.u32s(&[n, int]);
        }
        let func = b.ty("f", kind::FUNC, false, 1, proto);
        let var = b.ty("v", kind::VAR, false, 0, int);
        b.u32s(&[1]);
        b.ty(".data", kind::DATASEC, false, 1, 4);
        b.u32s(&[var, 0, 4]);
        b.ty("double", kind::FLOAT, false, 0, 8);
        b.ty("tag", kind::DECL_TAG, false, 0, func);
        b.u32s(&[u32::MAX]);
        b.ty("user", kind::TYPE_TAG, false, 0, int);
        b.ty("big", kind::ENUM64, false, 2, 8);
        for n in ["X", "Y"] {
            let n = b.s(n);
            b.u32s(&[n, 1, 2]);
        }
        let _ = e;

        // An empty `struct outer` (size 0) that must be skipped.
        b.strukt("outer", 0, &[]);

        // struct inner { int a; int b; }; typedef struct inner inner_t;
        let inner = b.strukt("inner", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
        let inner_t = b.ty("inner_t", kind::TYPEDEF, false, 0, inner);
        let c_inner_t = b.ty("", kind::CONST, false, 0, inner_t);
        let tagged = b.ty("rcu", kind::TYPE_TAG, false, 0, c_inner_t);
        // struct { int deep1; int deep2; } (anonymous)
        let anon_s = b.strukt("", 8, &[("deep1", int, 0, 0), ("deep2", int, 32, 0)]);
        // union { int u1; struct { ... }; inner_t in_union; } (anonymous)
        let anon_u = b.composite(
            kind::UNION,
            "",
            8,
            false,
            &[
                ("u1", int, 0, 0),
                ("", anon_s, 0, 0),
                ("in_union", inner_t, 0, 0),
            ],
        );
        // struct outer {
        //   int x;                 // 0
        //   union { ... };         // 8
        //   const inner_t nested;  // 16 (through a type tag too)
        //   unsigned int flags:3;  // byte 24
        //   unsigned int bad:5;    // bit 195
        //   unsigned int whole:8;  // byte 25
        //   u64 after;             // 32
        //   int *p;                // 40
        // };  (with kind_flag: bitfield sizes in the top 8 bits)
        b.composite(
            kind::STRUCT,
            "outer",
            48,
            true,
            &[
                ("x", int, 0, 0),
                ("", anon_u, 64, 0),
                ("nested", tagged, 128, 0),
                ("flags", uint, 192, 3),
                ("bad", uint, 195, 5),
                ("whole", uint, 200, 8),
                ("after", u64_, 256, 0),
                ("p", ptr, 320, 0),
            ],
        );
        // struct sock_common { ...; unsigned short skc_family; }, struct sock.
        let sc = b.strukt("sock_common", 16, &[("skc_family", uint, 64, 0)]);
        b.strukt(
            "sock",
            32,
            &[("__sk_common", sc, 0, 0), ("sk_x", int, 128, 0)],
        );
        b.build()
    }

    #[test]
    fn offsets_in_synthetic_btf() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.type_count(), 27);
        assert_eq!(btf.struct_size("outer").unwrap(), 48);
        let off = |m: &str| btf.member_offset("outer", m).unwrap();
        assert_eq!(off("x"), 0);
        // Inside the anonymous union, and in an anonymous struct within it.
        assert_eq!(off("u1"), 8);
        assert_eq!(off("deep1"), 8);
        assert_eq!(off("deep2"), 12);
        assert_eq!(off("in_union"), 8);
        assert_eq!(off("nested"), 16);
        // kind_flag bitfields at byte boundaries.
        assert_eq!(off("flags"), 24);
        assert_eq!(off("whole"), 25);
        assert_eq!(off("after"), 32);
        assert_eq!(off("p"), 40);
        // Dotted paths through type_tag -> const -> typedef -> struct.
        assert_eq!(btf.member_path("outer", "nested.b").unwrap(), 20);
        assert_eq!(btf.member_path("outer", "in_union.b").unwrap(), 12);
        assert_eq!(
            btf.member_path("sock", "__sk_common.skc_family").unwrap(),
            8
        );
        assert_eq!(btf.member_type_name("outer", "nested").unwrap(), "inner");
    }

    #[test]
    fn bitfield_not_at_byte_boundary_is_rejected() {
        let btf = Btf::parse(&sample()).unwrap();
        let err = btf.member_offset("outer", "bad").unwrap_err();
        assert!(matches!(
            err,
            BtfError::NotByteAligned {
                bit_offset: 195,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("bad") && msg.contains("outer") && msg.contains("195"),
            "{msg}"
        );
    }

    #[test]
    fn path_through_non_struct_is_rejected() {
        let btf = Btf::parse(&sample()).unwrap();
        let msg = btf.member_path("outer", "p.q").unwrap_err().to_string();
        assert!(msg.contains("member p of struct outer is a ptr"), "{msg}");
        let msg = btf
            .member_path("outer", "nested.zz")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "member zz not found in struct outer.nested");
    }

    #[test]
    fn kernel_offsets_checks_sock_layout() {
        let btf = Btf::parse(&sample()).unwrap();
        // The sample has a good `sock`, but no task_struct.
        let msg = kernel_offsets(&btf).unwrap_err().to_string();
        assert_eq!(msg, "struct task_struct not found in BTF");

        let mut b = Builder::new();
        let int = b.int("int", 4);
        let sc = b.strukt("sock_common", 8, &[("skc_family", int, 0, 0)]);
        b.strukt("sock", 16, &[("x", int, 0, 0), ("__sk_common", sc, 64, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let msg = kernel_offsets(&btf).unwrap_err().to_string();
        assert!(msg.contains("sock.__sk_common is at offset 8"), "{msg}");
    }

    #[test]
    fn big_endian_blob_parses() {
        // Byte-swap every u32 of a small little-endian blob (and the magic).
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.strukt("s", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
        let le = b.build();
        let mut be = Vec::new();
        be.extend_from_slice(&BTF_MAGIC.to_be_bytes());
        be.extend_from_slice(&le[2..4]);
        let str_start = HEADER_LEN + b.types.len();
        for w in le[4..str_start].chunks(4) {
            be.extend(w.iter().rev());
        }
        be.extend_from_slice(&le[str_start..]);
        let btf = Btf::parse(&be).unwrap();
        assert_eq!(btf.member_offset("s", "b").unwrap(), 4);
    }

    #[test]
    fn errors_name_the_problem() {
        let good = sample();

        let malformed = |blob: &[u8]| {
            let msg = Btf::parse(blob).unwrap_err().to_string();
            assert!(msg.starts_with("malformed BTF: "), "{msg}");
            msg
        };
        let mut bad = good.clone();
        bad[0] = 0x12;
        assert_eq!(malformed(&bad), "malformed BTF: Invalid BTF magic: 0xeb12");
        assert_eq!(malformed(&[]), "malformed BTF: empty");
        // Cut inside the string section, inside the header.
        malformed(&good[..good.len() - 3]);
        malformed(&good[..10]);
        malformed(&good[..1]);

        // A type section whose last record is cut short: shrink type_len by
        // 4 and move the string section accordingly.
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.strukt("s", 8, &[("a", int, 0, 0)]);
        let mut blob = b.build();
        let type_len = b.types.len() as u32;
        blob[12..16].copy_from_slice(&(type_len - 4).to_le_bytes());
        blob[16..20].copy_from_slice(&(type_len - 4).to_le_bytes());
        blob.drain(HEADER_LEN + b.types.len() - 4..HEADER_LEN + b.types.len());
        malformed(&blob);

        // Unknown kind 20.
        let mut b = Builder::new();
        b.int("int", 4);
        b.ty("what", 20, false, 0, 0);
        malformed(&b.build());

        let btf = Btf::parse(&good).unwrap();
        let msg = btf.member_offset("nope", "x").unwrap_err().to_string();
        assert_eq!(msg, "struct nope not found in BTF");
        let msg = btf.member_offset("outer", "nope").unwrap_err().to_string();
        assert_eq!(msg, "member nope not found in struct outer");
        // `inner_t` is a typedef, not a STRUCT.
        let msg = btf.member_offset("inner_t", "a").unwrap_err().to_string();
        assert_eq!(msg, "struct inner_t not found in BTF");

        let msg = Btf::from_file("/nonexistent/btf").unwrap_err().to_string();
        assert!(
            msg.starts_with("reading BTF from /nonexistent/btf: "),
            "{msg}"
        );
    }

    #[test]
    fn malformed_file_error_names_the_file() {
        let good = sample();
        let path = std::env::temp_dir().join(format!("monitor-btf-test-{}", std::process::id()));
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let msg = Btf::from_file(&path).unwrap_err().to_string();
        std::fs::write(&path, &good).unwrap();
        let ok = Btf::from_file(&path).map(|b| b.member_offset("outer", "after"));
        std::fs::remove_file(&path).unwrap();
        assert!(
            msg.starts_with(&format!(
                "reading BTF from {}: malformed BTF: ",
                path.display()
            )),
            "{msg}"
        );
        assert_eq!(ok.unwrap().unwrap(), 32);
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_parses() {
        // Each prefix of a valid blob, and the blob with each byte flipped:
        // an error or a BTF whose lookups answer, never a panic or a hang.
        let good = sample();
        let lookups = |b: &Btf| {
            for (s, m) in [("outer", "deep2"), ("outer", "nested.b"), ("sock", "sk_x")] {
                let _ = b.member_path(s, m);
                let _ = b.member_type_name(s, m);
            }
        };
        for n in 0..good.len() {
            assert!(
                Btf::parse(&good[..n]).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            if let Ok(b) = Btf::parse(&bad) {
                lookups(&b);
            }
        }
    }

    #[test]
    fn bad_type_reference_is_rejected() {
        let mut b = Builder::new();
        b.strukt("s", 8, &[("a", 99, 0, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let msg = btf.member_type_name("s", "a").unwrap_err().to_string();
        assert_eq!(msg, "malformed BTF: no type with id 99");

        // A typedef cycle: resolve must not loop forever.
        let mut b = Builder::new();
        let t = b.ty("t", kind::TYPEDEF, false, 0, 2);
        b.ty("u", kind::TYPEDEF, false, 0, t);
        b.strukt("s", 8, &[("", t, 0, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let msg = btf.member_offset("s", "x").unwrap_err().to_string();
        assert!(msg.contains("too deep"), "{msg}");
    }

    #[test]
    fn real_vmlinux_btf() {
        if !Path::new(VMLINUX_BTF_PATH).exists() {
            println!("skipping: {VMLINUX_BTF_PATH} not present");
            return;
        }
        let btf = Btf::from_file(VMLINUX_BTF_PATH).expect("parse vmlinux BTF");
        assert!(btf.type_count() > 10_000, "only {} types", btf.type_count());
        let o = kernel_offsets(&btf).expect("kernel offsets");
        println!("{} types; {o:#?}", btf.type_count());

        assert_eq!(o.valid, 1);
        let ptr = std::mem::size_of::<usize>() as u32;
        if ptr == 8 {
            assert_eq!(o.qstr_name, 8);
            assert_eq!(o.path_dentry, 8);
        }
        for (name, v) in [
            ("sk_family", o.sk_family),
            ("sk_daddr", o.sk_daddr),
            ("sk_dport", o.sk_dport),
        ] {
            assert!(v < 64, "{name} = {v}");
        }
        // Every offset lies inside its struct.
        for (strukt, name, v) in [
            ("task_struct", "files", o.task_files),
            ("files_struct", "fdt", o.files_fdt),
            ("fdtable", "max_fds", o.fdt_max_fds),
            ("fdtable", "fd", o.fdt_fd),
            ("file", "f_path", o.file_f_path),
            ("file", "f_inode", o.file_f_inode),
            ("file", "f_flags", o.file_f_flags),
            ("file", "private_data", o.file_private_data),
            ("path", "dentry", o.path_dentry),
            ("path", "mnt", o.path_mnt),
            ("inode", "i_mode", o.inode_i_mode),
            ("inode", "i_rdev", o.inode_i_rdev),
            ("inode", "i_ino", o.inode_i_ino),
            ("inode", "i_sb", o.inode_i_sb),
            ("super_block", "s_dev", o.sb_s_dev),
            ("super_block", "s_magic", o.sb_s_magic),
            ("dentry", "d_name", o.dentry_d_name),
            ("dentry", "d_parent", o.dentry_d_parent),
            ("qstr", "name", o.qstr_name),
            ("qstr", "len", o.qstr_len),
            ("socket", "sk", o.socket_sk),
            ("sock_common", "skc_family", o.sk_family),
            ("sock_common", "skc_daddr", o.sk_daddr),
            ("sock_common", "skc_dport", o.sk_dport),
            ("sock_common", "skc_v6_daddr", o.sk_v6_daddr),
            ("vfsmount", "mnt_root", o.vfsmount_mnt_root),
            ("mount", "mnt", o.mount_mnt),
            ("mount", "mnt_parent", o.mount_mnt_parent),
            ("mount", "mnt_mountpoint", o.mount_mnt_mountpoint),
        ] {
            let size = btf.struct_size(strukt).unwrap();
            assert!(v < size, "{strukt}.{name} at {v}, struct is {size} bytes");
        }
        // Pointer-sized/aligned members.
        for (name, v) in [
            ("task_files", o.task_files),
            ("files_fdt", o.files_fdt),
            ("fdt_fd", o.fdt_fd),
            ("file_f_inode", o.file_f_inode),
            ("file_private_data", o.file_private_data),
            ("inode_i_sb", o.inode_i_sb),
            ("dentry_d_parent", o.dentry_d_parent),
            ("socket_sk", o.socket_sk),
        ] {
            assert_eq!(v % ptr, 0, "{name} = {v} not pointer-aligned");
        }
        // Members of one struct must not collide.
        let distinct = |what: &str, vals: &[u32]| {
            let mut v = vals.to_vec();
            v.sort_unstable();
            v.dedup();
            assert_eq!(v.len(), vals.len(), "{what} offsets collide: {vals:?}");
        };
        distinct(
            "file",
            &[
                o.file_f_path,
                o.file_f_inode,
                o.file_f_flags,
                o.file_private_data,
            ],
        );
        distinct(
            "inode",
            &[o.inode_i_mode, o.inode_i_rdev, o.inode_i_ino, o.inode_i_sb],
        );
        distinct("fdtable", &[o.fdt_max_fds, o.fdt_fd]);
        distinct("super_block", &[o.sb_s_dev, o.sb_s_magic]);
        distinct("dentry", &[o.dentry_d_name, o.dentry_d_parent]);
        distinct(
            "sock_common",
            &[o.sk_family, o.sk_daddr, o.sk_dport, o.sk_v6_daddr],
        );
        // Dotted paths agree with adding up the single steps.
        assert_eq!(
            btf.member_path("file", "f_path.dentry").unwrap(),
            o.file_f_path + o.path_dentry
        );
        assert_eq!(
            btf.member_path("dentry", "d_name.name").unwrap(),
            o.dentry_d_name + o.qstr_name
        );
        assert_eq!(
            btf.member_path("sock", "__sk_common.skc_dport").unwrap(),
            o.sk_dport
        );
        // io_uring's request structs (this kernel has io_uring).
        if Path::new("/sys/kernel/tracing/events/io_uring").exists() {
            let u = uring_offsets(&btf).expect("io_uring offsets");
            println!("{u:#?}");
            if ptr == 8 {
                // struct io_sr_msg { file; union { umsg, buf }; int len; ... }
                assert_eq!(u.sr_buf, 8);
                assert_eq!(u.sr_len, 16);
                assert_eq!(u.connect_addr, 8);
                assert_eq!(u.close_fd, 8);
                assert_eq!(u.open_dfd, 8);
            }
            assert!(u.rw_addr > 0 && u.rw_len == u.rw_addr + 8, "{u:?}");
        }
    }
}
