//! A minimal, self-contained BTF (BPF Type Format) reader.
//!
//! The eBPF programs are built without CO-RE, so they walk kernel structs
//! (`task_struct -> files -> fdtable -> file -> inode`, `file -> socket ->
//! sock`) with `bpf_probe_read_kernel` at byte offsets the agent passes in
//! through [`KernelOffsets`]. This module computes those offsets from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Only what is needed for that is kept: every type record is walked exactly
//! (all kinds 1..=19), but only struct/union members and the type graph
//! needed to follow typedefs and modifiers are retained. Split BTF (kernel
//! modules, whose type ids continue after vmlinux's) is not supported.
//!
//! Format reference: the kernel's `Documentation/bpf/btf.rst` and
//! `include/uapi/linux/btf.h`.

use std::path::{Path, PathBuf};

use monitor_common::KernelOffsets;

/// `btf_header.magic`.
const BTF_MAGIC: u16 = 0xEB9F;
/// `btf_header.version` we understand.
const BTF_VERSION: u8 = 1;
/// Size of `struct btf_header` (version 1); `hdr_len` may be larger.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`.
const TYPE_LEN: usize = 12;
/// Deepest chain of typedefs/modifiers or nested anonymous members followed
/// before the BTF is declared cyclic.
const MAX_DEPTH: usize = 64;

/// BTF kind numbers (`BTF_KIND_*`).
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

    /// Human-readable kind name, for error messages.
    pub fn name(k: u8) -> &'static str {
        match k {
            0 => "void",
            INT => "INT",
            PTR => "PTR",
            ARRAY => "ARRAY",
            STRUCT => "STRUCT",
            UNION => "UNION",
            ENUM => "ENUM",
            FWD => "FWD",
            TYPEDEF => "TYPEDEF",
            VOLATILE => "VOLATILE",
            CONST => "CONST",
            RESTRICT => "RESTRICT",
            FUNC => "FUNC",
            FUNC_PROTO => "FUNC_PROTO",
            VAR => "VAR",
            DATASEC => "DATASEC",
            FLOAT => "FLOAT",
            DECL_TAG => "DECL_TAG",
            TYPE_TAG => "TYPE_TAG",
            ENUM64 => "ENUM64",
            _ => "unknown",
        }
    }
}

/// Everything that can go wrong reading BTF or looking up offsets in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("reading BTF from {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The blob does not start with the BTF magic in either byte order.
    #[error("bad BTF magic {found:#06x} (expected {BTF_MAGIC:#06x})")]
    BadMagic { found: u16 },
    /// A BTF version other than 1.
    #[error("unsupported BTF version {0} (expected {BTF_VERSION})")]
    BadVersion(u8),
    /// The header is internally inconsistent (e.g. overlapping sections).
    #[error("bad BTF header: {0}")]
    BadHeader(&'static str),
    /// Data ends (or a section ends) in the middle of something.
    #[error("BTF truncated at offset {offset} (reading {what})")]
    Truncated { offset: usize, what: &'static str },
    /// A type record of a kind this parser does not know (> 19 or 0).
    #[error("unknown BTF kind {kind} at type id {id}")]
    UnknownKind { kind: u8, id: u32 },
    /// A name offset pointing outside the string section.
    #[error("BTF string offset {offset} out of range at type id {id}")]
    BadString { offset: u32, id: u32 },
    /// A reference to a type id that does not exist.
    #[error("BTF type id {id} out of range (referenced from type id {from})")]
    BadTypeId { id: u32, from: u32 },
    /// A typedef/modifier chain or nested anonymous members that never end.
    #[error("BTF type chain starting at type id {0} is too deep (cyclic?)")]
    TooDeep(u32),
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

/// One member of a struct or union.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct/union.
    bit_offset: u32,
    /// Bitfield width in bits; 0 if not a bitfield (or unknown, when the
    /// enclosing type has no `kind_flag`).
    bitfield_size: u32,
}

/// One parsed type record (only what the lookups need).
#[derive(Clone, Debug)]
struct Type {
    kind: u8,
    name_off: u32,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT/ENUM64, else `type`.
    size_or_type: u32,
    /// Members of a STRUCT/UNION; empty otherwise.
    members: Vec<Member>,
}

/// A parsed BTF blob: its types (id 0 is `void`) and string section.
#[derive(Clone, Debug)]
pub struct Btf {
    /// Index = type id; `types[0]` is the implicit `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

/// Bounds-checked reader of `u16`/`u32` in the blob's byte order.
struct Reader<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: usize, what: &'static str) -> Result<[u8; N], BtfError> {
        off.checked_add(N)
            .and_then(|end| self.data.get(off..end))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(BtfError::Truncated { offset: off, what })
    }

    fn u32(&self, off: usize, what: &'static str) -> Result<u32, BtfError> {
        let b = self.bytes::<4>(off, what)?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
}

/// Bytes of trailing data after a `btf_type` of kind `k` with `vlen` entries,
/// or `None` for an unknown kind.
fn trailing_len(k: u8, vlen: usize) -> Option<usize> {
    Some(match k {
        // u32 encoding.
        kind::INT => 4,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        // struct btf_array { type, index_type, nelems }.
        kind::ARRAY => 12,
        // struct btf_member { name_off, type, offset } * vlen.
        kind::STRUCT | kind::UNION => 12 * vlen,
        // struct btf_enum { name_off, val } * vlen.
        kind::ENUM => 8 * vlen,
        // struct btf_param { name_off, type } * vlen.
        kind::FUNC_PROTO => 8 * vlen,
        // struct btf_var { linkage }.
        kind::VAR => 4,
        // struct btf_var_secinfo { type, offset, size } * vlen.
        kind::DATASEC => 12 * vlen,
        // struct btf_decl_tag { component_idx }.
        kind::DECL_TAG => 4,
        // struct btf_enum64 { name_off, val_lo32, val_hi32 } * vlen.
        kind::ENUM64 => 12 * vlen,
        _ => return None,
    })
}

/// Whether `k` refers to another type through `size_or_type` and is
/// transparent for layout purposes.
fn is_alias(k: u8) -> bool {
    matches!(
        k,
        kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG
    )
}

/// Whether `k` uses `size_or_type` as a type id.
fn refers_to_type(k: u8) -> bool {
    is_alias(k) || matches!(k, kind::PTR | kind::FUNC | kind::VAR | kind::DECL_TAG)
}

impl Btf {
    /// Reads and parses a BTF file, e.g. `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|error| BtfError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Btf::parse(&data)
    }

    /// Parses a raw BTF blob (header, type section, string section).
    ///
    /// Both byte orders are accepted (detected from the magic). Every type
    /// record is walked with its exact trailing size, so an unknown kind or a
    /// record running past the type section is an error rather than a
    /// silently wrong type numbering.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = data
            .get(0..2)
            .ok_or(BtfError::Truncated {
                offset: 0,
                what: "header magic",
            })
            .map(|b| u16::from_le_bytes([b[0], b[1]]))?;
        let big_endian = match magic {
            BTF_MAGIC => false,
            m if m == BTF_MAGIC.swap_bytes() => true,
            found => return Err(BtfError::BadMagic { found }),
        };
        let r = Reader { data, big_endian };
        let [version, _flags] = r.bytes::<2>(2, "header version")?;
        if version != BTF_VERSION {
            return Err(BtfError::BadVersion(version));
        }
        let hdr_len = r.u32(4, "header hdr_len")? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::BadHeader("hdr_len smaller than 24"));
        }
        let type_off = r.u32(8, "header type_off")? as usize;
        let type_len = r.u32(12, "header type_len")? as usize;
        let str_off = r.u32(16, "header str_off")? as usize;
        let str_len = r.u32(20, "header str_len")? as usize;

        // Section bounds, absolute in `data`.
        let section = |off: usize, len: usize, what: &'static str| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() => Ok((start, end)),
                _ => Err(BtfError::Truncated {
                    offset: data.len(),
                    what,
                }),
            }
        };
        let (types_start, types_end) = section(type_off, type_len, "type section")?;
        let (str_start, str_end) = section(str_off, str_len, "string section")?;
        if types_start < str_end && str_start < types_end {
            return Err(BtfError::BadHeader("type and string sections overlap"));
        }
        let strings = data[str_start..str_end].to_vec();
        if strings.first().is_some_and(|&b| b != 0) {
            return Err(BtfError::BadHeader(
                "string section does not start with NUL",
            ));
        }
        if strings.last().is_some_and(|&b| b != 0) {
            return Err(BtfError::BadHeader("string section does not end with NUL"));
        }

        let check_name = |offset: u32, id: u32| {
            if offset == 0 || (offset as usize) < strings.len() {
                Ok(offset)
            } else {
                Err(BtfError::BadString { offset, id })
            }
        };

        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        // The type section, walked with offsets relative to `data`.
        let tr = Reader {
            data: &data[..types_end],
            big_endian,
        };
        let mut off = types_start;
        while off < types_end {
            let id =
                u32::try_from(types.len()).map_err(|_| BtfError::BadHeader("too many types"))?;
            let name_off = check_name(tr.u32(off, "btf_type.name_off")?, id)?;
            let info = tr.u32(off + 4, "btf_type.info")?;
            let size_or_type = tr.u32(off + 8, "btf_type.size")?;
            let vlen = (info & 0xffff) as usize;
            let k = ((info >> 24) & 0x1f) as u8;
            let kind_flag = info & (1 << 31) != 0;
            let extra = trailing_len(k, vlen).ok_or(BtfError::UnknownKind { kind: k, id })?;
            let body = off + TYPE_LEN;
            let next = body + extra;
            if next > types_end {
                return Err(BtfError::Truncated {
                    offset: types_end,
                    what: "type record",
                });
            }
            let mut members = Vec::new();
            if k == kind::STRUCT || k == kind::UNION {
                members.reserve(vlen);
                for i in 0..vlen {
                    let m = body + 12 * i;
                    let raw_offset = tr.u32(m + 8, "btf_member.offset")?;
                    let (bit_offset, bitfield_size) = if kind_flag {
                        (raw_offset & 0x00ff_ffff, raw_offset >> 24)
                    } else {
                        (raw_offset, 0)
                    };
                    members.push(Member {
                        name_off: check_name(tr.u32(m, "btf_member.name_off")?, id)?,
                        type_id: tr.u32(m + 4, "btf_member.type")?,
                        bit_offset,
                        bitfield_size,
                    });
                }
            }
            types.push(Type {
                kind: k,
                name_off,
                size_or_type,
                members,
            });
            off = next;
        }

        // Validate type references so lookups can index freely.
        let count = types.len();
        for (from, t) in types.iter().enumerate() {
            let from = from as u32;
            let refs = t.members.iter().map(|m| m.type_id);
            let own = refers_to_type(t.kind).then_some(t.size_or_type);
            for id in own.into_iter().chain(refs) {
                if id as usize >= count {
                    return Err(BtfError::BadTypeId { id, from });
                }
            }
        }

        Ok(Btf { types, strings })
    }

    /// The NUL-terminated string at `off` in the string section.
    fn name_bytes(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Type by id; ids were validated at parse time, but stay defensive.
    fn ty(&self, id: u32, from: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::BadTypeId { id, from })
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the real type.
    fn resolve(&self, mut id: u32) -> Result<(u32, &Type), BtfError> {
        let start = id;
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id, start)?;
            if !is_alias(t.kind) {
                return Ok((id, t));
            }
            id = t.size_or_type;
        }
        Err(BtfError::TooDeep(start))
    }

    /// Type id of the first STRUCT named `name` with a non-zero size.
    pub fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .position(|t| {
                t.kind == kind::STRUCT
                    && t.size_or_type != 0
                    && self.name_bytes(t.name_off) == name.as_bytes()
            })
            .map(|i| i as u32)
            .ok_or_else(|| BtfError::StructNotFound(name.to_string()))
    }

    /// Finds `member` in the struct/union `id`, descending into anonymous
    /// struct/union members (adding their offsets). Returns the member's bit
    /// offset from the start of `id`, its type id and bitfield size.
    fn find_member(
        &self,
        id: u32,
        member: &str,
        depth: usize,
    ) -> Result<Option<(u64, u32, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let t = self.ty(id, id)?;
        for m in &t.members {
            if m.name_off != 0 {
                if self.name_bytes(m.name_off) == member.as_bytes() {
                    return Ok(Some((u64::from(m.bit_offset), m.type_id, m.bitfield_size)));
                }
                continue;
            }
            let (inner_id, inner) = self.resolve(m.type_id)?;
            if inner.kind == kind::STRUCT || inner.kind == kind::UNION {
                if let Some((off, ty, bits)) = self.find_member(inner_id, member, depth + 1)? {
                    return Ok(Some((u64::from(m.bit_offset) + off, ty, bits)));
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
        let mut id = self.find_struct(struct_name)?;
        let mut where_ = struct_name.to_string();
        let mut total_bits: u64 = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (bits, member_ty, _bitfield) =
                self.find_member(id, part, 0)?
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
                let (next_id, next) = self.resolve(member_ty)?;
                if next.kind != kind::STRUCT && next.kind != kind::UNION {
                    return Err(BtfError::NotComposite {
                        strukt: where_,
                        member: part.to_string(),
                        kind: kind::name(next.kind),
                        rest: parts.collect::<Vec<_>>().join("."),
                    });
                }
                id = next_id;
                where_ = format!("{where_}.{part}");
            }
        }
        u32::try_from(total_bits / 8).map_err(|_| BtfError::Overflow {
            strukt: struct_name.to_string(),
            member: path.to_string(),
        })
    }

    /// Name of the type of `member` in `struct struct_name`, after following
    /// typedefs and modifiers (e.g. `"sock_common"`); empty if anonymous.
    pub fn member_type_name(&self, struct_name: &str, member: &str) -> Result<String, BtfError> {
        let id = self.find_struct(struct_name)?;
        let (_, ty, _) =
            self.find_member(id, member, 0)?
                .ok_or_else(|| BtfError::MemberNotFound {
                    strukt: struct_name.to_string(),
                    member: member.to_string(),
                })?;
        let (_, t) = self.resolve(ty)?;
        Ok(String::from_utf8_lossy(self.name_bytes(t.name_off)).into_owned())
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

    impl Btf {
        /// Number of types, not counting the implicit `void` (id 0).
        fn type_count(&self) -> usize {
            self.types.len() - 1
        }

        /// Size in bytes of the struct `find_struct` picks.
        fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
            let id = self.find_struct(name)?;
            Ok(self.ty(id, id)?.size_or_type)
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
        assert!(msg.contains("member p of struct outer is a PTR"), "{msg}");
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

        let mut bad = good.clone();
        bad[0] = 0x12;
        let msg = Btf::parse(&bad).unwrap_err().to_string();
        assert_eq!(msg, "bad BTF magic 0xeb12 (expected 0xeb9f)");

        // Cut inside the string section: the header promises more.
        let msg = Btf::parse(&good[..good.len() - 3]).unwrap_err().to_string();
        assert!(msg.starts_with("BTF truncated at offset"), "{msg}");
        assert!(msg.contains("string section"), "{msg}");

        // Cut inside the header.
        let msg = Btf::parse(&good[..10]).unwrap_err().to_string();
        assert_eq!(msg, "BTF truncated at offset 8 (reading header type_off)");
        let msg = Btf::parse(&good[..1]).unwrap_err().to_string();
        assert_eq!(msg, "BTF truncated at offset 0 (reading header magic)");

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
        let msg = Btf::parse(&blob).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "BTF truncated at offset {} (reading type record)",
                HEADER_LEN + b.types.len() - 4
            )
        );

        // Unknown kind 20 at type id 2.
        let mut b = Builder::new();
        b.int("int", 4);
        b.ty("what", 20, false, 0, 0);
        let msg = Btf::parse(&b.build()).unwrap_err().to_string();
        assert_eq!(msg, "unknown BTF kind 20 at type id 2");

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
    fn bad_type_reference_is_rejected() {
        let mut b = Builder::new();
        b.strukt("s", 8, &[("a", 99, 0, 0)]);
        let msg = Btf::parse(&b.build()).unwrap_err().to_string();
        assert_eq!(
            msg,
            "BTF type id 99 out of range (referenced from type id 1)"
        );

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
        assert!(o.sk_v6_daddr < btf.struct_size("sock_common").unwrap());
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
