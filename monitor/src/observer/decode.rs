//! Typed decode of ring-buffer records (see `monitor_common`).
//!
//! Captured user memory (read/write payloads, argv, envp) is held in
//! [`Captured`], which never prints its bytes and zeroes them when dropped.
use std::mem::size_of;

use monitor_common::{
    CloseEvent, ConnectEvent, DataEvent, DupEvent, EventHeader, EventKind, ExecEvent,
    ExecResultEvent, ExitEvent, ForkEvent, GetenvEvent, MmapEvent, OpenEvent, ProcAccessEvent,
    TransferEvent, UringCreateEvent,
};
use zeroize::Zeroize;

/// Bytes copied from a process's memory. May hold a secret: no `Debug` of
/// the contents, zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Captured(Vec<u8>);

impl Captured {
    pub fn new(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Captured({} bytes)", self.0.len())
    }
}

/// One decoded record.
#[derive(Debug, Clone)]
pub enum RawEvent {
    Open(OpenEvent),
    Read(DataEvent, Captured),
    Mmap(MmapEvent),
    Close(CloseEvent),
    Dup(DupEvent),
    Transfer(TransferEvent),
    /// With the written file's path as the kernel resolved it, if any.
    Write(DataEvent, Captured, Option<String>),
    /// argv and envp as NUL-separated strings.
    Exec(ExecEvent, Captured, Captured),
    ExecResult(ExecResultEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    Connect(ConnectEvent),
    ProcAccess(ProcAccessEvent),
    Getenv(GetenvEvent),
    /// An io_uring instance created by a tracked process.
    UringCreate(UringCreateEvent),
}

impl RawEvent {
    pub fn header(&self) -> &EventHeader {
        match self {
            RawEvent::Open(e) => &e.hdr,
            RawEvent::Read(e, _) | RawEvent::Write(e, _, _) => &e.hdr,
            RawEvent::Mmap(e) => &e.hdr,
            RawEvent::Close(e) => &e.hdr,
            RawEvent::Dup(e) => &e.hdr,
            RawEvent::Transfer(e) => &e.hdr,
            RawEvent::Exec(e, _, _) => &e.hdr,
            RawEvent::ExecResult(e) => &e.hdr,
            RawEvent::Fork(e) => &e.hdr,
            RawEvent::Exit(e) => &e.hdr,
            RawEvent::Connect(e) => &e.hdr,
            RawEvent::ProcAccess(e) => &e.hdr,
            RawEvent::Getenv(e) => &e.hdr,
            RawEvent::UringCreate(e) => &e.hdr,
        }
    }

    /// The record's kind, for the pipeline's trace spans.
    pub fn name(&self) -> &'static str {
        match self {
            RawEvent::Open(_) => "open",
            RawEvent::Read(..) => "read",
            RawEvent::Mmap(_) => "mmap",
            RawEvent::Close(_) => "close",
            RawEvent::Dup(_) => "dup",
            RawEvent::Transfer(_) => "transfer",
            RawEvent::Write(..) => "write",
            RawEvent::Exec(..) => "exec",
            RawEvent::ExecResult(_) => "exec_result",
            RawEvent::Fork(_) => "fork",
            RawEvent::Exit(_) => "exit",
            RawEvent::Connect(_) => "connect",
            RawEvent::ProcAccess(_) => "proc_access",
            RawEvent::Getenv(_) => "getenv",
            RawEvent::UringCreate(_) => "uring_create",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {len} bytes, expected at least {need}")]
    Truncated {
        kind: EventKind,
        len: usize,
        need: usize,
    },
    #[error("{kind:?} record says {claimed} payload bytes but carries {have}")]
    BadPayload {
        kind: EventKind,
        claimed: usize,
        have: usize,
    },
}

fn read<T: Copy>(buf: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            len: buf.len(),
            need,
        });
    }
    // SAFETY: length checked; every ABI struct is plain old data.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const T) })
}

fn payload<T>(buf: &[u8], kind: EventKind, len: usize) -> Result<&[u8], DecodeError> {
    let start = size_of::<T>();
    let have = buf.len().saturating_sub(start);
    if len > have {
        return Err(DecodeError::BadPayload {
            kind,
            claimed: len,
            have,
        });
    }
    Ok(&buf[start..start + len])
}

/// Decode one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<RawEvent, DecodeError> {
    if buf.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(buf.len()));
    }
    let hdr: EventHeader = read(buf, EventKind::Open)?;
    let kind = EventKind::from_u32(hdr.kind).ok_or(DecodeError::UnknownKind(hdr.kind))?;
    Ok(match kind {
        EventKind::Open => RawEvent::Open(read(buf, kind)?),
        EventKind::Read | EventKind::Write => {
            let e: DataEvent = read(buf, kind)?;
            let (n, p) = (e.data_len as usize, e.path_len as usize);
            let all = payload::<DataEvent>(buf, kind, n + p)?;
            let data = Captured::new(&all[..n]);
            if kind == EventKind::Read {
                RawEvent::Read(e, data)
            } else {
                let path = (p > 0).then(|| String::from_utf8_lossy(&all[n..]).into_owned());
                RawEvent::Write(e, data, path)
            }
        }
        EventKind::Mmap => RawEvent::Mmap(read(buf, kind)?),
        EventKind::Close => RawEvent::Close(read(buf, kind)?),
        EventKind::Dup => RawEvent::Dup(read(buf, kind)?),
        EventKind::Transfer => RawEvent::Transfer(read(buf, kind)?),
        EventKind::Exec => {
            let e: ExecEvent = read(buf, kind)?;
            let (a, n) = (e.argv_len as usize, e.envp_len as usize);
            let all = payload::<ExecEvent>(buf, kind, a + n)?;
            RawEvent::Exec(e, Captured::new(&all[..a]), Captured::new(&all[a..]))
        }
        EventKind::ExecResult => RawEvent::ExecResult(read(buf, kind)?),
        EventKind::Fork => RawEvent::Fork(read(buf, kind)?),
        EventKind::Exit => RawEvent::Exit(read(buf, kind)?),
        EventKind::Connect => RawEvent::Connect(read(buf, kind)?),
        EventKind::ProcAccess => RawEvent::ProcAccess(read(buf, kind)?),
        EventKind::Getenv => RawEvent::Getenv(read(buf, kind)?),
        EventKind::UringCreate => RawEvent::UringCreate(read(buf, kind)?),
    })
}

/// A NUL-terminated C string from a fixed buffer, lossily as UTF-8.
pub fn cstr(buf: &[u8], len: u32) -> String {
    let len = (len as usize).min(buf.len());
    let end = buf[..len].iter().position(|&b| b == 0).unwrap_or(len);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A `comm` field.
pub fn comm(c: &[u8; 16]) -> String {
    cstr(c, 16)
}

/// Split NUL-separated strings (argv/envp payloads).
pub fn split_nul(data: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    if out.last().is_some_and(|s| s.is_empty()) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::*;

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            ts_ns: 1,
            cgroup_id: 2,
            kind: kind as u32,
            pid: 10,
            tid: 11,
            uid: 0,
            gid: 0,
            hook: Hook::Write as u32,
            flags: HDR_TRACKED,
            _pad: 0,
            comm: *b"cat\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain ABI struct.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    fn data_event(kind: EventKind, data_len: u32) -> DataEvent {
        DataEvent {
            hdr: header(kind),
            file: FileInfo::default(),
            peer: SockAddr::default(),
            fd: 1,
            flags: DATA_TRACKED,
            count: 5,
            data_len,
            watch_id: 0,
            path_len: 0,
            chunk_off: 0,
        }
    }

    #[test]
    fn decodes_a_write_with_its_payload() {
        let mut rec = bytes_of(&data_event(EventKind::Write, 5));
        rec.extend_from_slice(b"hello");
        match decode(&rec).unwrap() {
            RawEvent::Write(e, data, path) => {
                assert_eq!(path, None);
                assert_eq!(e.fd, 1);
                assert_eq!(e.hdr.pid, 10);
                assert_eq!(data.bytes(), b"hello");
                assert_eq!(format!("{data:?}"), "Captured(5 bytes)");
            }
            other => panic!("wrong kind {other:?}"),
        }
    }

    #[test]
    fn decodes_the_kernel_path_after_the_payload() {
        let mut e = data_event(EventKind::Write, 3);
        e.path_len = 6;
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"abc/tmp/x");
        match decode(&rec).unwrap() {
            RawEvent::Write(_, data, path) => {
                assert_eq!(data.bytes(), b"abc");
                assert_eq!(path.as_deref(), Some("/tmp/x"));
            }
            other => panic!("wrong kind {other:?}"),
        }
    }

    #[test]
    fn rejects_payload_longer_than_the_record() {
        let mut rec = bytes_of(&data_event(EventKind::Read, 10));
        rec.extend_from_slice(b"abc");
        assert_eq!(
            decode(&rec).unwrap_err(),
            DecodeError::BadPayload {
                kind: EventKind::Read,
                claimed: 10,
                have: 3
            }
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0u8; 8]).unwrap_err(), DecodeError::Short(8));
        let mut h = header(EventKind::Fork);
        h.kind = 99;
        let mut rec = bytes_of(&h);
        rec.resize(200, 0);
        assert_eq!(decode(&rec).unwrap_err(), DecodeError::UnknownKind(99));
        let rec = bytes_of(&header(EventKind::Fork));
        assert!(matches!(decode(&rec), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn decodes_exec_argv_and_envp() {
        let mut e = ExecEvent {
            hdr: header(EventKind::Exec),
            argc: 2,
            envc: 1,
            argv_len: 9,
            envp_len: 4,
            flags: 0,
            filename_len: 8,
            filename: [0; PATH_LEN],
        };
        e.filename[..8].copy_from_slice(b"/bin/env");
        let mut rec = bytes_of(&e);
        rec.extend_from_slice(b"env\0-i\0x\0A=1\0");
        match decode(&rec).unwrap() {
            RawEvent::Exec(e, argv, envp) => {
                assert_eq!(cstr(&e.filename, e.filename_len), "/bin/env");
                assert_eq!(split_nul(argv.bytes()), vec![&b"env"[..], b"-i", b"x"]);
                assert_eq!(split_nul(envp.bytes()), vec![&b"A=1"[..]]);
            }
            other => panic!("wrong kind {other:?}"),
        }
    }

    #[test]
    fn cstr_stops_at_nul_and_len() {
        assert_eq!(cstr(b"abc\0def", 7), "abc");
        assert_eq!(cstr(b"abcdef", 3), "abc");
        assert_eq!(comm(b"bash\0\0\0\0\0\0\0\0\0\0\0\0"), "bash");
    }
}
