//! Keyed fingerprints of secret values, and a fast scanner that finds any
//! known secret, raw or encoded, in captured buffers.
//!
//! # What this is for
//!
//! The agent learns a secret's plaintext when a holder reads its delivery file
//! (the captured read buffer) or is exec'd with the env var. It then has to
//! recognise that secret in later captured buffers (write/send payloads up to
//! 4 KiB, argv and envp up to about 16 KiB) without keeping the plaintext.
//! [`FingerprintSet::add`] turns the value and its common encodings
//! ([`Encoding`]) into keyed fingerprints; [`FingerprintSet::scan`] reports
//! every place in a buffer where one of them occurs.
//!
//! # No plaintext is retained
//!
//! A [`FingerprintSet`] stores only:
//!
//! * key material derived from the [`FingerprintKey`] with BLAKE3's key
//!   derivation (a 32-byte confirmation key and six 64-bit prefilter/tag
//!   keys; the master key itself is dropped and zeroized). Zeroized on drop.
//! * For every fingerprinted byte string `F` (the value or one of its
//!   encodings): `blake3::keyed_hash(confirm_key, F)` truncated to 128 bits,
//!   its length, the secret's [`SecretRef`], the [`Encoding`], and two
//!   *anchors*: offsets `k`, `k + 1` into `F` with two 32-bit keyed hashes
//!   (prefilter and tag) of each 7-byte window `F[k..k + 7]`, `F[k + 1..k +
//!   8]` (see "Scanning"). One 48-byte record per `F` in a chunked arena;
//!   the anchors are filed under their tags as chains through those records
//!   (a hash map `tag -> first anchor`, no allocation per tag).
//! * A bitset indexed by the anchors' prefilter hashes.
//! * Per secret: the keyed hash of the raw value (to dedupe and for
//!   [`FingerprintSet::contains`]).
//!
//! Every temporary buffer that holds the value or an encoding of it is a
//! fixed-capacity scratch buffer that can never reallocate (a reallocation
//! would leave an unzeroized copy behind: pushing past the capacity panics
//! instead) and is zeroized, spare capacity included, when dropped. The
//! caller's own copy is the caller's to zeroize. Residues out of reach of
//! this module, accepted: words in CPU registers and stack slots (an 8-byte
//! window while hashing, BLAKE3's on-stack state).
//!
//! Nothing in this module implements `Display`, and the `Debug` impls of
//! [`FingerprintKey`] and [`FingerprintSet`] print no key, plaintext or hash
//! (the set prints counts only).
//!
//! ## What someone who dumps the agent's memory learns
//!
//! Without the key: nothing usable. Every stored value is a keyed hash, so
//! even a low-entropy secret cannot be brute-forced from the tables alone
//! (unit test: tables moved under another key find nothing).
//!
//! With the key (it is in the same process, so a full dump has it): the
//! attacker can test guesses of a whole fingerprinted string against the
//! 128-bit hashes, which is inherent to any fingerprint scheme. The anchors
//! additionally let them test guesses of 7-byte windows. All anchors of one
//! secret (raw and every encoding) are placed over the *same* 8-byte region
//! of the value, so together they reveal at most those 8 bytes, and only by
//! brute force (2^56 per raw window of random bytes; a hex window covers 3.5
//! bytes of the value, 2^28). A secret of 16 random bytes or more keeps at
//! least 64 unknown bits. Windows at every position are deliberately *not*
//! stored: they would let a guessed or known prefix (`-----BEGIN …`) be
//! extended one byte at a time.
//!
//! # Scanning
//!
//! Every fingerprint is at least [`MIN_SECRET_LEN`] = 8 bytes long and its two
//! anchor windows start at consecutive offsets, so in any occurrence one of
//! them starts at an even position of the buffer. The scan visits the even
//! positions `i` only; it loads `buf[i..i + 7]` as an integer `w` and computes
//! the keyed prefilter hash `pre(w) = ((w ^ k0) * k1) >> 32` (multiplicative
//! hashing, `k0`, `k1` derived from the key, `k1` odd). Its low bits index a
//! bitset sized at about 128 bits per anchor (so about 0.8 % of windows
//! pass), at most 1 MiB (past about 65,000 anchors, some 3,000 secrets, it
//! gets denser, about 2 % of windows passing at 10,000 secrets: the bitset
//! of a larger set no longer fits a core's cache anyway, and a 2 MiB one
//! would be 1 MiB more of the agent's resident memory). Only then is the stronger keyed 32-bit tag (two
//! 64×64→128-bit multiply-fold rounds, wyhash style) computed and looked up
//! in a hash map `tag -> [anchor]`; an anchor whose prefilter hash also
//! matches is confirmed by `blake3::keyed_hash(confirm_key, buf[i - k .. i -
//! k + len])` compared in constant time with its stored 128 bits. Random
//! windows reach BLAKE3 with probability about `anchors / 2^64`; a false
//! match then also needs a 128-bit keyed-hash collision.
//!
//! The cost is O(`buf.len()`) plus one BLAKE3 per genuine anchor hit,
//! *independent of the number of secrets and of the number of distinct
//! fingerprint lengths*. (The per-length rolling-hash design costs one
//! rolling pass per distinct length; 1,000 secrets of 20–64 bytes have
//! about 100 distinct fingerprint lengths, which measured ~13 MB/s here,
//! against ~1.8 GB/s for this scan; see the `bench_scan_throughput` test.)
//! The scan allocates only the returned `Vec`, and only if something
//! matched.
//!
//! Anchor placement: for each secret `add` picks one 8-byte region of the
//! value, preferring (1) regions not overlapping another secret's anchor
//! windows, (2) random-looking content (distinct bytes, mixed character
//! classes), (3) closeness to 3/4 of the value; it then checks that no
//! anchor of any form clashes with another secret's and otherwise tries the
//! next region (up to 8). This keeps anchors off the shared prefixes and
//! suffixes of structured tokens (`sk-proj-`, `ghp_`, `eyJhbGciOi…`,
//! `-----BEGIN …`), which would otherwise make many secrets' candidates fire
//! on every token of the same type in the traffic.
//!
//! Worst case: a buffer that repeats a secret's anchor window at every
//! position (only someone who knows that secret can craft it) costs one
//! BLAKE3 of the fingerprint length per two bytes, roughly 10–30 MB/s.
//!
//! # Encodings fingerprinted
//!
//! For the value `V` (after trimming one trailing `"\n"` or `"\r\n"`):
//!
//! | encoding | forms |
//! |---|---|
//! | [`Encoding::Raw`] | `V` |
//! | [`Encoding::Base64`] | standard alphabet, with and without `=` padding (one fingerprint: the unpadded form, reported with its padding when the padding follows it); plus the three "inside a longer stream" forms below |
//! | [`Encoding::Base64url`] | URL-safe alphabet, with and without padding; plus the three stream forms |
//! | [`Encoding::Hex`] | lowercase and uppercase |
//! | [`Encoding::Percent`] | RFC 3986: unreserved (`A-Z a-z 0-9 - . _ ~`) kept, every other byte `%XX`; uppercase and lowercase hex digits (only when different from `V`) |
//! | [`Encoding::Json`] | `V` escaped as `serde_json` escapes a string (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other bytes below 0x20 as `\u00xx`), without quotes; only when `V` is UTF-8 and the escaped form differs from `V` |
//!
//! Base64 inside a longer stream (e.g. `echo "user:$SECRET" | base64`): `V`
//! may start at byte offset `a` ∈ {0, 1, 2} modulo 3 of the encoded stream.
//! For each `a` and each alphabet we fingerprint the characters of
//! `base64(P_a ++ V ++ …)` whose six bits all come from `V`: character `j`
//! covers stream bits `[6j, 6j + 6)`, so we keep `j` with `6j ≥ 8a` and
//! `6j + 6 ≤ 8(a + |V|)`. That drops the leading characters mixed with the
//! unknown prefix and the trailing ones mixed with unknown following bytes
//! (or padding). There are `⌊4(a+|V|)/3⌋ − ⌈4a/3⌉ ≥ 10` such characters for
//! `|V| ≥ 8`, so they are always at least [`MIN_SECRET_LEN`] long.
//!
//! Not recognised: line-wrapped base64 (a newline every 76 characters) across
//! the break; `application/x-www-form-urlencoded` (`+` for space); a secret
//! split across two captured buffers or cut by the capture limit.
//!
//! Identical strings produced by different forms of one secret are stored
//! once, under the first encoding in the order of the table.
//!
//! # Overlapping matches
//!
//! [`FingerprintSet::scan`] reports each `(secret, encoding, offset)` once. When
//! several fingerprints of the *same* secret match and one match's region is
//! contained in another's (padded vs. unpadded base64, a stream form inside
//! the full base64, …) only the longest is reported (on equal regions the
//! encoding that comes first in the table). Matches of *different* secrets
//! are all reported, even when they overlap.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Deref;

#[cfg(test)]
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::engine::GeneralPurpose;
use base64::Engine as _;
use zeroize::Zeroize;

/// Values shorter than this (after the newline trim) are not fingerprinted.
///
/// Short values collide with ordinary data far too often: a 4-character
/// password or a PIN such as `1234` occurs by chance in a large fraction of
/// captured buffers, so every match would be a false positive, and it would
/// be cheap to brute-force from its fingerprint by anyone who has the key.
/// Eight bytes is also the span of the two 7-byte anchor windows the scan
/// keys on, so every fingerprint contains both.
pub const MIN_SECRET_LEN: usize = 8;

/// Index handed out by [`FingerprintSet::add`]. Refs are never reused within
/// one set, even after [`FingerprintSet::remove`].
pub type SecretRef = u32;

/// Every fingerprint carries two overlapping anchor windows of `WIN` bytes,
/// at offsets `k` and `k + 1`, together spanning `SPAN` bytes; the scan
/// probes only even positions (`STRIDE`), and one of the two windows of any
/// occurrence always starts at an even position.
const WIN: usize = 7;
const STRIDE: usize = 2;
const SPAN: usize = WIN + STRIDE - 1;
const WIN_MASK: u64 = (1u64 << (8 * WIN)) - 1;
const _: () = assert!(SPAN == 8 && SPAN <= MIN_SECRET_LEN);

/// Bitset size bounds (log2 of the number of bits) and density.
const MIN_BITS_LOG2: u32 = 15; // 4 KiB
const MAX_BITS_LOG2: u32 = 23; // 1 MiB
const BITS_PER_ANCHOR_LOG2: u32 = 7; // ~128 bits per anchor window

/// How many anchor regions `add` tries before settling for the one whose
/// anchors collide with the fewest other secrets' anchors.
const REGION_TRIES: usize = 8;

const CONFIRM_CONTEXT: &str = "monitor correlate fingerprint v1: confirm key";
const PREFILTER_CONTEXT: &str = "monitor correlate fingerprint v1: prefilter keys";

/// Errors from building a [`FingerprintKey`]. None of them contains key
/// material: the messages name the problem (length, position of the first
/// bad character) but never echo the input.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// The operating system's random generator failed.
    #[error("cannot generate a fingerprint key: OS random generator failed: {0}")]
    Random(getrandom::Error),
    /// The configured key does not have exactly 64 characters.
    #[error("fingerprint key must be exactly 64 hex characters (32 bytes), got {found} bytes")]
    KeyLength {
        /// Length of the configured string, in bytes.
        found: usize,
    },
    /// The configured key has a character that is not a hex digit.
    #[error("fingerprint key must be hex: byte {position} is not a hex digit (0-9, a-f, A-F)")]
    KeyNotHex {
        /// 0-based byte position of the first non-hex character.
        position: usize,
    },
}

/// The 256-bit key all fingerprints are keyed with.
///
/// Either random per agent ([`FingerprintKey::random`]) or a fleet key from
/// the configuration ([`FingerprintKey::from_hex`]) so that several agents
/// produce the same fingerprints. Zeroized on drop; its `Debug` prints no key
/// material.
pub struct FingerprintKey([u8; 32]);

impl FingerprintKey {
    /// A fresh key from the operating system's random generator.
    pub fn random() -> Result<Self, FingerprintError> {
        let mut key = FingerprintKey([0u8; 32]);
        getrandom::fill(&mut key.0).map_err(FingerprintError::Random)?;
        Ok(key)
    }

    /// A key from exactly 64 hex digits (either case, no surrounding
    /// whitespace, no `0x`). Errors name the problem and never echo the key.
    pub fn from_hex(s: &str) -> Result<Self, FingerprintError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(FingerprintError::KeyLength { found: bytes.len() });
        }
        let mut key = FingerprintKey([0u8; 32]);
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(FingerprintError::KeyNotHex { position: 2 * i })?;
            let lo = hex_val(pair[1]).ok_or(FingerprintError::KeyNotHex {
                position: 2 * i + 1,
            })?;
            key.0[i] = (hi << 4) | lo;
        }
        Ok(key)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Drop for FingerprintKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// How a secret appeared in a scanned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The value itself.
    Raw,
    /// Standard-alphabet base64, padded, unpadded, or inside a longer stream.
    Base64,
    /// URL-safe base64, padded, unpadded, or inside a longer stream.
    Base64url,
    /// Hex, lowercase or uppercase.
    Hex,
    /// RFC 3986 percent-encoding, `%XX` or `%xx`.
    Percent,
    /// JSON string escaping (without the quotes).
    Json,
}

impl Encoding {
    /// The serialized name: `"raw"`, `"base64"`, `"base64url"`, `"hex"`,
    /// `"percent"`, `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Base64 => "base64",
            Encoding::Base64url => "base64url",
            Encoding::Hex => "hex",
            Encoding::Percent => "percent",
            Encoding::Json => "json",
        }
    }

    /// Tie-break order when two encodings of one secret match the same region.
    fn rank(self) -> u8 {
        self as u8
    }
}

/// One occurrence of a known secret in a scanned buffer: `buf[offset..offset
/// + len]` is the secret `secret` in encoding `encoding`. Holds no plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Match {
    /// Which secret (as returned by [`FingerprintSet::add`]).
    pub secret: SecretRef,
    /// How it was encoded.
    pub encoding: Encoding,
    /// Byte offset of the match in the scanned buffer.
    pub offset: usize,
    /// Length of the match in bytes.
    pub len: usize,
}

/// Key material derived from the [`FingerprintKey`]; zeroized on drop.
struct Keys {
    /// BLAKE3 key for the confirmation hashes.
    confirm: [u8; 32],
    /// Prefilter hash: `((w ^ pre[0]) * pre[1]) >> 32`, `pre[1]` odd.
    pre: [u64; 2],
    /// Anchor tag hash keys.
    tag: [u64; 4],
}

impl Keys {
    fn derive(key: &FingerprintKey) -> Keys {
        let confirm = blake3::derive_key(CONFIRM_CONTEXT, &key.0);
        let mut bytes = [0u8; 48];
        blake3::Hasher::new_derive_key(PREFILTER_CONTEXT)
            .update(&key.0)
            .finalize_xof()
            .fill(&mut bytes);
        let mut w = [0u64; 6];
        for (x, chunk) in w.iter_mut().zip(bytes.chunks_exact(8)) {
            *x = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        bytes.zeroize();
        let keys = Keys {
            confirm,
            pre: [w[0], w[1] | 1],
            tag: [w[2], w[3], w[4], w[5] | 1],
        };
        w.zeroize();
        keys
    }

    /// Cheap keyed hash of a window (as a little-endian integer); its low
    /// bits index the bitset.
    #[inline(always)]
    fn pre(&self, w: u64) -> u32 {
        ((w ^ self.pre[0]).wrapping_mul(self.pre[1]) >> 32) as u32
    }

    /// Stronger keyed 32-bit hash of a window; keys the anchor map.
    #[inline]
    fn tag(&self, w: u64) -> u32 {
        let a = mum(w ^ self.tag[0], w.rotate_left(29) ^ self.tag[1]);
        let b = mum(a ^ self.tag[2], self.tag[3]);
        ((b >> 32) ^ b) as u32
    }

    /// `blake3::keyed_hash(confirm_key, bytes)`, truncated to
    /// [`HASH_LEN`] bytes.
    fn confirm(&self, bytes: &[u8]) -> Hash {
        let full = blake3::keyed_hash(&self.confirm, bytes);
        let mut h = [0u8; HASH_LEN];
        h.copy_from_slice(&full.as_bytes()[..HASH_LEN]);
        h
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.confirm.zeroize();
        self.pre.zeroize();
        self.tag.zeroize();
    }
}

/// 64×64→128-bit multiply, folded to 64 bits.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The 8 bytes at the start of `b` as a little-endian integer.
#[inline(always)]
fn load_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// The two anchor windows of the `SPAN` bytes at the start of `b`: bytes
/// `0..7` and `1..8`.
#[inline(always)]
fn windows_at(b: &[u8]) -> [u64; 2] {
    let w = load_u64(b);
    [w & WIN_MASK, w >> 8]
}

/// Hasher for the anchor map: its keys are already keyed hashes, so just
/// spread them over 64 bits (hashbrown uses the top bits too).
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.0 = u64::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type TagMap<V> = HashMap<u32, V, BuildHasherDefault<TagHasher>>;

/// Confirmation hashes are BLAKE3 keyed hashes truncated to 128 bits: a
/// false confirmation needs a 128-bit collision of a keyed hash, and only
/// buffers whose anchor window already passed the 32-bit prefilter and
/// 32-bit tag are hashed at all.
const HASH_LEN: usize = 16;
type Hash = [u8; HASH_LEN];

/// Constant-time equality of two confirmation hashes.
#[inline]
fn hash_eq(a: &Hash, b: &Hash) -> bool {
    (u128::from_ne_bytes(*a) ^ u128::from_ne_bytes(*b)) == 0
}

/// End of an anchor chain.
const NONE: u32 = u32::MAX;
/// `secret` of a free arena slot (refs never reach `u32::MAX`).
const FREE: SecretRef = u32::MAX;

/// One fingerprinted string `F` (the value or one of its encodings) of one
/// secret, with its two anchor windows at offsets `k` and `k + 1`. Anchor
/// `2 * i + d` is window `d` of the fingerprint in arena slot `i`.
#[derive(Clone, Copy)]
struct Fingerprint {
    /// `blake3::keyed_hash(confirm_key, F)`, first [`HASH_LEN`] bytes.
    hash: Hash,
    /// Prefilter hashes of the two anchor windows (must equal the scanned
    /// window's).
    pre: [u32; 2],
    /// Next anchor with the same tag as window `d`, or [`NONE`].
    next: [u32; 2],
    /// Offset of the first anchor window in `F`.
    k: u32,
    /// `F.len()`.
    len: u32,
    secret: SecretRef,
    encoding: Encoding,
    /// Whole-value base64 without padding: the number of `=` that make it
    /// the padded form (a match followed by them is reported with them, as
    /// the padded form); 0 for every other form.
    pad: u8,
}

const FREE_SLOT: Fingerprint = Fingerprint {
    hash: [0; HASH_LEN],
    pre: [0; 2],
    next: [NONE; 2],
    k: 0,
    len: 0,
    secret: FREE,
    encoding: Encoding::Raw,
    pad: 0,
};

/// Fingerprints per arena chunk (48 KiB): the arena grows one chunk at a
/// time, so it never holds more than one chunk of slack and never copies.
const CHUNK: usize = 1024;

/// Every stored fingerprint, in fixed-size chunks; freed slots are reused.
#[derive(Default)]
struct Arena {
    chunks: Vec<Box<[Fingerprint]>>,
    /// Slots handed out so far (live or free).
    len: u32,
    free: Vec<u32>,
}

impl Arena {
    #[inline]
    fn get(&self, i: u32) -> &Fingerprint {
        &self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    fn get_mut(&mut self, i: u32) -> &mut Fingerprint {
        &mut self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    fn alloc(&mut self, f: Fingerprint) -> u32 {
        if let Some(i) = self.free.pop() {
            *self.get_mut(i) = f;
            return i;
        }
        let i = self.len;
        assert!(i < NONE / 2, "too many fingerprints");
        if (i as usize).is_multiple_of(CHUNK) {
            self.chunks.push(vec![FREE_SLOT; CHUNK].into_boxed_slice());
        }
        self.len += 1;
        *self.get_mut(i) = f;
        i
    }

    /// Slots of live fingerprints.
    fn live(&self) -> impl Iterator<Item = (u32, &Fingerprint)> {
        (0..self.len)
            .map(|i| (i, self.get(i)))
            .filter(|(_, f)| f.secret != FREE)
    }
}

/// The anchor index: tag -> the chain of anchors with that tag, threaded
/// through the fingerprints themselves (no per-tag allocation).
#[derive(Default)]
struct Anchors {
    /// Tag -> first anchor of its chain.
    heads: TagMap<u32>,
    fps: Arena,
}

impl Anchors {
    fn contains_key(&self, tag: &u32) -> bool {
        self.heads.contains_key(tag)
    }

    /// The anchors of the chain starting at `head`: (window, fingerprint).
    #[inline]
    fn chain(&self, head: u32) -> impl Iterator<Item = (usize, &Fingerprint)> {
        let mut a = head;
        std::iter::from_fn(move || {
            if a == NONE {
                return None;
            }
            let d = (a & 1) as usize;
            let f = self.fps.get(a >> 1);
            a = f.next[d];
            Some((d, f))
        })
    }

    /// Files window `d` of fingerprint slot `i` under `tag`.
    fn link(&mut self, tag: u32, i: u32, d: usize) {
        let a = 2 * i + d as u32;
        let prev = self.heads.insert(tag, a).unwrap_or(NONE);
        self.fps.get_mut(i).next[d] = prev;
    }

    /// Unlinks and frees every fingerprint of `r`; returns how many anchors
    /// went.
    fn remove_secret(&mut self, r: SecretRef) -> usize {
        let Anchors { heads, fps } = self;
        let mut removed = 0;
        heads.retain(|_, head| {
            let mut prev = NONE;
            let mut a = *head;
            while a != NONE {
                let d = (a & 1) as usize;
                let (next, ours) = {
                    let f = fps.get(a >> 1);
                    (f.next[d], f.secret == r)
                };
                if ours {
                    if prev == NONE {
                        *head = next;
                    } else {
                        fps.get_mut(prev >> 1).next[(prev & 1) as usize] = next;
                    }
                    removed += 1;
                } else {
                    prev = a;
                }
                a = next;
            }
            *head != NONE
        });
        for i in 0..fps.len {
            if fps.get(i).secret == r {
                *fps.get_mut(i) = FREE_SLOT;
                fps.free.push(i);
            }
        }
        removed
    }
}

/// A fingerprint to be stored, with the tags of its two anchor windows.
type Form = ([u32; 2], Fingerprint);

/// Per-secret bookkeeping.
struct Slot {
    /// Keyed hash of the raw value (key of `by_raw`).
    raw: Hash,
}

/// The fingerprints of all known secrets, and the scanner.
///
/// Retains no plaintext: see the module documentation for exactly what is
/// stored. `Debug` prints only counts.
pub struct FingerprintSet {
    keys: Keys,
    /// Anchor tag -> anchor windows with that tag, and the fingerprints.
    by_tag: Anchors,
    /// Keyed hash of the raw value -> its ref (dedupe, `contains`).
    by_raw: HashMap<Hash, SecretRef>,
    slots: HashMap<SecretRef, Slot>,
    next_ref: SecretRef,
    /// Number of stored anchor windows (two per fingerprint).
    anchors: usize,
    /// Bitset over the low `bits_log2` bits of the anchors' prefilter hashes.
    bits: Vec<u64>,
    bits_log2: u32,
    /// Longest fingerprinted form in bytes (never shrinks).
    longest: usize,
    /// When sharing with a fleet: what [`add`](Self::add) learned since the
    /// last [`take_shared`](Self::take_shared).
    shared: Option<Vec<(SecretRef, SharedSecret)>>,
}

impl fmt::Debug for FingerprintSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintSet")
            .field("secrets", &self.slots.len())
            .field("fingerprints", &(self.anchors / STRIDE))
            .finish_non_exhaustive()
    }
}

/// Trims ONE trailing `"\r\n"` or `"\n"`: secret files usually end with a
/// newline that is not part of the secret.
fn trim_newline(v: &[u8]) -> &[u8] {
    if let Some(s) = v.strip_suffix(b"\r\n") {
        s
    } else if let Some(s) = v.strip_suffix(b"\n") {
        s
    } else {
        v
    }
}

impl FingerprintSet {
    /// An empty set keyed with `key`. The key is consumed; only subkeys
    /// derived from it are kept.
    pub fn new(key: FingerprintKey) -> Self {
        let keys = Keys::derive(&key);
        drop(key);
        FingerprintSet {
            keys,
            by_tag: Anchors::default(),
            by_raw: HashMap::new(),
            slots: HashMap::new(),
            next_ref: 0,
            anchors: 0,
            bits: vec![0u64; 1 << (MIN_BITS_LOG2 - 6)],
            bits_log2: MIN_BITS_LOG2,
            longest: 0,
            shared: None,
        }
    }

    /// Length of the longest fingerprinted form (with base64 padding): a
    /// secret split across two buffers is found if the last
    /// `longest_form() - 1` bytes of the first are scanned with the second.
    pub fn longest_form(&self) -> usize {
        self.longest
    }

    /// Fingerprints `value` and all its encodings (see the module docs) and
    /// returns its ref.
    ///
    /// ONE trailing `"\n"` or `"\r\n"` is trimmed first, because delivery
    /// files usually end with a newline that programs strip before use; the
    /// trimmed value still matches a write of `value` with the newline, since
    /// it is a substring of it. Returns `None` if the trimmed value is shorter
    /// than [`MIN_SECRET_LEN`] (or, theoretically, once 2^32 refs have been
    /// handed out). Adding a value that is already known returns its existing
    /// ref.
    ///
    /// Does not retain `value` or any buffer derived from it except the
    /// fingerprints: every temporary holding the value or an encoding of it
    /// is zeroized before it is freed. The caller zeroizes its own copy.
    pub fn add(&mut self, value: &[u8]) -> Option<SecretRef> {
        let v = trim_newline(value);
        if v.len() < MIN_SECRET_LEN {
            return None;
        }
        let raw = self.keys.confirm(v);
        if let Some(&r) = self.by_raw.get(&raw) {
            return Some(r);
        }
        let r = self.next_ref;
        self.next_ref = self.next_ref.checked_add(1)?;

        // Try anchor regions in order of preference; keep the first whose
        // anchors no other secret uses (else the one with fewest clashes).
        let mut best: Option<(usize, Vec<Form>)> = None;
        for region in self.region_order(v) {
            let forms = self.anchor_forms(v, region, r);
            let clashes = forms
                .iter()
                .flat_map(|(tags, _)| tags)
                .filter(|t| self.by_tag.contains_key(t))
                .count();
            if best.as_ref().is_none_or(|(c, _)| clashes < *c) {
                best = Some((clashes, forms));
            }
            if clashes == 0 {
                break;
            }
        }
        let (_, forms) = best.expect("a value of MIN_SECRET_LEN bytes has a region");
        if let Some(log) = self.shared.as_mut() {
            log.push((r, SharedSecret::of(&raw, &forms)));
        }

        self.insert_forms(r, raw, forms);
        Some(r)
    }

    /// The ref of `value` if it is known (same newline trimming and length
    /// rule as [`add`](Self::add)); dedupe is by keyed hash.
    pub fn contains(&self, value: &[u8]) -> Option<SecretRef> {
        let v = trim_newline(value);
        if v.len() < MIN_SECRET_LEN {
            return None;
        }
        self.by_raw.get(&self.keys.confirm(v)).copied()
    }

    /// Forgets secret `r` (revoked and long expired): its fingerprints no
    /// longer match. Unknown refs are ignored. The ref is not reused.
    pub fn remove(&mut self, r: SecretRef) {
        let Some(slot) = self.slots.remove(&r) else {
            return;
        };
        self.by_raw.remove(&slot.raw);
        self.anchors -= self.by_tag.remove_secret(r);
        self.rebuild_bits();
    }

    /// Number of secrets currently known.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if no secret is known.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// All occurrences of known secrets in `buf`, sorted by offset (then
    /// secret, then encoding).
    ///
    /// Each `(secret, encoding, offset)` is reported once; of several matches
    /// of one secret whose regions nest, only the longest is kept (see the
    /// module docs). Cost: one pass over `buf` with a keyed hash and a bitset
    /// probe at every other byte, plus a BLAKE3 confirmation for the rare
    /// anchor hits: O(`buf.len()`), independent of the number of secrets and
    /// of distinct fingerprint lengths. Allocates only the result, and only
    /// if something matched.
    pub fn scan(&self, buf: &[u8]) -> Vec<Match> {
        self.scan_with(buf, bmi2())
    }

    /// [`FingerprintSet::scan`], the fast loop compiled for BMI2 or not
    /// (the tests run both).
    fn scan_with(&self, buf: &[u8], bmi2: bool) -> Vec<Match> {
        let mut out = Vec::new();
        if self.anchors == 0 || buf.len() < MIN_SECRET_LEN {
            return out;
        }
        let mut i = self.probe(buf, &mut out, bmi2);
        let n = buf.len();
        while i + WIN <= n {
            self.check_at(buf, i, &mut out);
            i += STRIDE;
        }
        if out.len() > 1 {
            keep_longest(&mut out);
        }
        out
    }

    /// The fast loop of [`FingerprintSet::scan`]: the even positions four
    /// at a time; a group whose four windows all miss the bitset costs no
    /// branch, the others are checked one by one. Returns where the tail
    /// starts. With `bmi2` (only when the CPU has it) the same loop
    /// compiled with BMI2's shifts (`shlx`, `shrx`: no count register, no
    /// copies), some 16 % fewer instructions.
    #[inline]
    fn probe(&self, buf: &[u8], out: &mut Vec<Match>, bmi2: bool) -> usize {
        #[cfg(target_arch = "x86_64")]
        if bmi2 {
            // SAFETY: `bmi2` is true only when the CPU has BMI2 (see
            // [`bmi2`]); the function is otherwise the portable loop.
            return unsafe { self.probe_bmi2(buf, out) };
        }
        let _ = bmi2;
        self.probe_portable(buf, out)
    }

    #[inline(always)]
    fn probe_portable(&self, buf: &[u8], out: &mut Vec<Match>) -> usize {
        let keys = &self.keys;
        let bits = &self.bits[..];
        let words = bits.len() - 1; // a power of two minus one
        let probe = |w: u64| -> u64 {
            let idx = keys.pre(w & WIN_MASK) as usize;
            bits[(idx >> 6) & words] & (1u64 << (idx & 63))
        };
        // Even positions i with i + WIN <= len start a window. Four probes
        // (8 bytes) per step with one branch; hits are rare and re-probed.
        let n = buf.len();
        let mut i = 0;
        while i + 6 + 8 <= n {
            let c: &[u8; 14] = buf[i..i + 14].try_into().unwrap();
            let any = probe(load_u64(&c[0..]))
                | probe(load_u64(&c[2..]))
                | probe(load_u64(&c[4..]))
                | probe(load_u64(&c[6..]));
            if any != 0 {
                for j in [i, i + 2, i + 4, i + 6] {
                    self.check_at(buf, j, out);
                }
            }
            i += 8;
        }
        i
    }

    /// [`FingerprintSet::probe_portable`] compiled for BMI2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "bmi2")]
    unsafe fn probe_bmi2(&self, buf: &[u8], out: &mut Vec<Match>) -> usize {
        self.probe_portable(buf, out)
    }

    /// Slow path: probes the window starting at `i` and confirms its
    /// candidates.
    #[cold]
    #[inline(never)]
    fn check_at(&self, buf: &[u8], i: usize, out: &mut Vec<Match>) {
        let w = if i + 8 <= buf.len() {
            load_u64(&buf[i..]) & WIN_MASK
        } else {
            load_u64(&buf[i + WIN - 8..]) >> 8 // i >= 1 here: buf.len() >= 8
        };
        let pre = self.keys.pre(w);
        let idx = pre as usize & ((1usize << self.bits_log2) - 1);
        if self.bits[idx >> 6] & (1u64 << (idx & 63)) == 0 {
            return;
        }
        let Some(&head) = self.by_tag.heads.get(&self.keys.tag(w)) else {
            return;
        };
        // Several candidates may ask for the same window (same start and len).
        let mut last: Option<(usize, usize, Hash)> = None;
        for (d, f) in self.by_tag.chain(head) {
            if f.pre[d] != pre {
                continue;
            }
            let (k, len) = (f.k as usize + d, f.len as usize);
            let Some(start) = i.checked_sub(k) else {
                continue;
            };
            if start + len > buf.len() {
                continue;
            }
            let h = match last {
                Some((s, l, h)) if s == start && l == len => h,
                _ => {
                    let h = self.keys.confirm(&buf[start..start + len]);
                    last = Some((start, len, h));
                    h
                }
            };
            if hash_eq(&h, &f.hash) {
                // Unpadded base64 followed by its padding: the padded form.
                let pad = f.pad as usize;
                let padded =
                    pad > 0 && buf.get(start + len..start + len + pad) == Some(&b"=="[..pad]);
                out.push(Match {
                    secret: f.secret,
                    encoding: f.encoding,
                    offset: start,
                    len: if padded { len + pad } else { len },
                });
            }
        }
    }

    /// Every form of `v` as a fingerprint with its two anchor tags, its
    /// anchors placed over the `SPAN` bytes of `v` at `region`.
    fn anchor_forms(&self, v: &[u8], region: usize, r: SecretRef) -> Vec<Form> {
        let keys = &self.keys;
        let mut forms: Vec<Form> = Vec::new();
        let center = region + SPAN / 2;
        for_each_form(
            v,
            center,
            &mut |form: &[u8], encoding: Encoding, pos: usize, pad: u8| {
                if form.len() < MIN_SECRET_LEN || form.len() > (u32::MAX / 2) as usize {
                    return;
                }
                let hash = keys.confirm(form);
                if forms.iter().any(|(_, f)| f.hash == hash) {
                    return; // same string as an earlier form of this secret
                }
                let k = pos.saturating_sub(SPAN / 2).min(form.len() - SPAN);
                let w = windows_at(&form[k..]);
                forms.push((
                    [keys.tag(w[0]), keys.tag(w[1])],
                    Fingerprint {
                        hash,
                        pre: [keys.pre(w[0]), keys.pre(w[1])],
                        next: [NONE; 2],
                        k: k as u32,
                        len: form.len() as u32,
                        secret: r,
                        encoding,
                        pad,
                    },
                ));
            },
        );
        forms
    }

    /// Candidate anchor regions of `v` (offsets of `SPAN`-byte regions), best
    /// first, at most `REGION_TRIES`.
    ///
    /// Preference: (1) not overlapping a region whose raw windows are already
    /// some other secret's anchors (shared structure); (2) random-looking:
    /// many distinct bytes and several character classes, which keeps
    /// anchors off headers and type prefixes such as `-----BEGIN `, `sk-`,
    /// `ghp_`; (3) closest to 3/4 of the value: shared structure is mostly a
    /// prefix (token type, JWT header, PEM header), sometimes a short suffix.
    fn region_order(&self, v: &[u8]) -> Vec<usize> {
        let last = v.len() - SPAN;
        let mut shared = vec![false; last + 1];
        for r in 0..=last {
            let clash = windows_at(&v[r..])
                .iter()
                .any(|&w| self.by_tag.contains_key(&self.keys.tag(w)));
            if clash {
                let lo = r.saturating_sub(SPAN - 1);
                let hi = (r + SPAN - 1).min(last);
                shared[lo..=hi].iter_mut().for_each(|s| *s = true);
            }
        }
        let target = 3 * last / 4;
        let mut order: Vec<(bool, std::cmp::Reverse<u32>, usize, usize)> = (0..=last)
            .map(|r| {
                (
                    shared[r],
                    std::cmp::Reverse(quality(&v[r..r + SPAN])),
                    r.abs_diff(target),
                    r,
                )
            })
            .collect();
        let tries = REGION_TRIES.min(order.len());
        order.select_nth_unstable(tries - 1);
        order.truncate(tries);
        order.sort_unstable();
        order.into_iter().map(|(.., r)| r).collect()
    }

    /// Index secret `r`'s forms (its anchors in the tag table and the
    /// prefilter bitmap) under its confirmation hash `raw`: what `add` and
    /// `import` share.
    fn insert_forms(&mut self, r: SecretRef, raw: Hash, forms: Vec<Form>) {
        for (tags, mut f) in forms {
            f.secret = r;
            let pre = f.pre;
            self.longest = self.longest.max(f.len as usize + f.pad as usize);
            let i = self.by_tag.fps.alloc(f);
            for d in 0..STRIDE {
                self.by_tag.link(tags[d], i, d);
                set_bit(&mut self.bits, self.bits_log2, pre[d]);
            }
            self.anchors += STRIDE;
        }
        self.by_raw.insert(raw, r);
        self.slots.insert(r, Slot { raw });
        if self.wanted_bits_log2() > self.bits_log2 {
            self.rebuild_bits();
        }
    }

    fn wanted_bits_log2(&self) -> u32 {
        let want = (self.anchors.max(1) as u64) << BITS_PER_ANCHOR_LOG2;
        (64 - (want - 1).leading_zeros()).clamp(MIN_BITS_LOG2, MAX_BITS_LOG2)
    }

    /// Rebuilds the bitset from the stored anchors (after a removal, or when
    /// it has become too dense).
    fn rebuild_bits(&mut self) {
        self.bits_log2 = self.wanted_bits_log2();
        // Free the old bitset before allocating the new one.
        self.bits = Vec::new();
        self.bits = vec![0u64; 1usize << (self.bits_log2 - 6)];
        for (_, f) in self.by_tag.fps.live() {
            for pre in f.pre {
                set_bit(&mut self.bits, self.bits_log2, pre);
            }
        }
    }
}

/// Does this CPU have BMI2 (checked once)?
fn bmi2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("bmi2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sets the bit of prefilter hash `pre` in a bitset of `2^log2` bits.
fn set_bit(bits: &mut [u64], log2: u32, pre: u32) {
    let idx = pre as usize & ((1usize << log2) - 1);
    bits[idx >> 6] |= 1u64 << (idx & 63);
}

/// How random a region looks: distinct bytes plus 3 × character classes
/// (lower, upper, digit, other printable, space/control, non-ASCII; at most
/// 3 counted). Random alphanumerics score 17, `-----BEG` 11, `sk-proj-` 13.
fn quality(win: &[u8]) -> u32 {
    let distinct = (0..win.len())
        .filter(|&i| !win[..i].contains(&win[i]))
        .count() as u32;
    let mut classes = 0u8;
    for &b in win {
        classes |= match b {
            b'a'..=b'z' => 1,
            b'A'..=b'Z' => 2,
            b'0'..=b'9' => 4,
            0x21..=0x7e => 8,
            0x80..=0xff => 32,
            _ => 16,
        };
    }
    distinct + 3 * classes.count_ones().min(3)
}

/// Sorts `out` and drops, per secret, every match whose region lies inside
/// another kept match of the same secret (longest first; on equal regions the
/// lower-ranked encoding wins).
fn keep_longest(out: &mut Vec<Match>) {
    out.sort_unstable_by_key(|m| {
        (
            m.secret,
            m.offset,
            std::cmp::Reverse(m.len),
            m.encoding.rank(),
        )
    });
    let mut cur: Option<(SecretRef, usize)> = None; // (secret, max end kept)
    out.retain(|m| {
        let end = m.offset + m.len;
        match cur {
            // Every kept match of this secret starts at or before m.
            Some((s, max_end)) if s == m.secret && max_end >= end => false,
            Some((s, max_end)) if s == m.secret => {
                cur = Some((s, max_end.max(end)));
                true
            }
            _ => {
                cur = Some((m.secret, end));
                true
            }
        }
    });
    out.sort_unstable_by_key(|m| (m.offset, m.secret, m.encoding.rank(), m.len));
}

/// A fixed-capacity byte buffer for plaintext-derived data. It never
/// reallocates (that would leave an unzeroized copy on the heap: pushing past
/// the capacity panics instead) and zeroizes its whole capacity on drop.
struct Scratch(Vec<u8>);

impl Scratch {
    fn with_capacity(cap: usize) -> Scratch {
        Scratch(Vec::with_capacity(cap))
    }

    fn push(&mut self, b: u8) {
        assert!(
            self.0.len() < self.0.capacity(),
            "fingerprint scratch buffer would reallocate"
        );
        self.0.push(b);
    }

    fn extend(&mut self, s: &[u8]) {
        assert!(
            s.len() <= self.0.capacity() - self.0.len(),
            "fingerprint scratch buffer would reallocate"
        );
        self.0.extend_from_slice(s);
    }

    /// Grows the length to `len` (within capacity) with zeros and returns the
    /// whole buffer.
    fn zeroed(&mut self, len: usize) -> &mut [u8] {
        assert!(
            len <= self.0.capacity(),
            "fingerprint scratch buffer would reallocate"
        );
        self.0.resize(len, 0);
        &mut self.0[..]
    }
}

impl Deref for Scratch {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Zeroes the initialized part and the spare capacity.
        self.0.zeroize();
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Encodes `v` with an unpadded base64 engine into a fresh scratch buffer.
fn b64(engine: &GeneralPurpose, v: &[u8]) -> Scratch {
    let n = base64::encoded_len(v.len(), false).expect("secret too large to base64");
    let mut s = Scratch::with_capacity(n);
    let written = engine
        .encode_slice(v, s.zeroed(n))
        .expect("buffer sized by encoded_len");
    debug_assert_eq!(written, n);
    s
}

/// RFC 3986 unreserved characters.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends byte `b` of a UTF-8 string as `serde_json` writes it inside a
/// string: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other bytes below 0x20
/// as `\u00xx` (lowercase hex), everything else (including 0x7f and
/// multi-byte UTF-8) as is.
fn json_push(s: &mut Scratch, b: u8) {
    match b {
        b'"' => s.extend(b"\\\""),
        b'\\' => s.extend(b"\\\\"),
        0x08 => s.extend(b"\\b"),
        0x0c => s.extend(b"\\f"),
        b'\n' => s.extend(b"\\n"),
        b'\r' => s.extend(b"\\r"),
        b'\t' => s.extend(b"\\t"),
        0x00..=0x1f => s.extend(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX_LOWER[(b >> 4) as usize],
            HEX_LOWER[(b & 15) as usize],
        ]),
        _ => s.push(b),
    }
}

fn json_needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `f(form, encoding, pos, pad)`: see [`for_each_form`].
type FormFn<'a> = dyn FnMut(&[u8], Encoding, usize, u8) + 'a;

/// Calls `f(form, encoding, pos, pad)` for every fingerprinted form of `v`,
/// where `pos` is the offset in `form` corresponding to byte `center` of `v`
/// (used to put every form's anchor over the same region of `v`) and `pad`
/// the number of `=` that complete a whole-value unpadded base64 form (0 for
/// every other form). Forms may repeat
/// (e.g. unpadded base64 equal to the aligned form) and may be shorter than
/// `MIN_SECRET_LEN`; the caller filters. Every buffer is a `Scratch`.
fn for_each_form(v: &[u8], center: usize, f: &mut FormFn<'_>) {
    let n = v.len();
    debug_assert!(center <= n);

    // Raw.
    f(v, Encoding::Raw, center, 0);

    // Whole-value base64: char j starts at bit 6j, so byte c starts in char
    // floor(8c/6). Unpadded; the padded form is the unpadded one followed by
    // `pad` `=` (the scan checks for them), so it needs no fingerprint of
    // its own.
    let b64_pos = center * 8 / 6;
    let pad = ((3 - n % 3) % 3) as u8;
    for (engine, enc) in [
        (&STANDARD_NO_PAD, Encoding::Base64),
        (&URL_SAFE_NO_PAD, Encoding::Base64url),
    ] {
        let s = b64(engine, v);
        f(&s, enc, b64_pos, pad);
    }

    // Base64 inside a longer stream: V starts at byte a (mod 3). Keep the
    // characters j with 6j >= 8a and 6j + 6 <= 8(a + n).
    for a in 0..3usize {
        let mut prefixed = Scratch::with_capacity(a + n);
        prefixed.zeroed(a);
        prefixed.extend(v);
        let lo = (4 * a).div_ceil(3);
        let hi = 4 * (a + n) / 3; // exclusive
        for (engine, enc) in [
            (&STANDARD_NO_PAD, Encoding::Base64),
            (&URL_SAFE_NO_PAD, Encoding::Base64url),
        ] {
            let s = b64(engine, &prefixed);
            let pos = (8 * (a + center) / 6).saturating_sub(lo);
            f(&s[lo..hi], enc, pos, 0);
        }
    }

    // Hex, lower and upper.
    for digits in [HEX_LOWER, HEX_UPPER] {
        let mut s = Scratch::with_capacity(2 * n);
        for &b in v {
            s.push(digits[(b >> 4) as usize]);
            s.push(digits[(b & 15) as usize]);
        }
        f(&s, Encoding::Hex, 2 * center, 0);
    }

    // Percent-encoding, %XX and %xx, only if something needs escaping.
    if !v.iter().all(|&b| unreserved(b)) {
        for digits in [HEX_UPPER, HEX_LOWER] {
            let mut s = Scratch::with_capacity(3 * n);
            let mut pos = 0;
            for (i, &b) in v.iter().enumerate() {
                if i == center {
                    pos = s.len();
                }
                if unreserved(b) {
                    s.push(b);
                } else {
                    s.extend(&[b'%', digits[(b >> 4) as usize], digits[(b & 15) as usize]]);
                }
            }
            if center == n {
                pos = s.len();
            }
            f(&s, Encoding::Percent, pos, 0);
        }
    }

    // JSON string escaping, only for UTF-8 values that need escaping.
    if std::str::from_utf8(v).is_ok() && v.iter().any(|&b| json_needs_escape(b)) {
        let mut s = Scratch::with_capacity(6 * n);
        let mut pos = 0;
        for (i, &b) in v.iter().enumerate() {
            if i == center {
                pos = s.len();
            }
            json_push(&mut s, b);
        }
        if center == n {
            pos = s.len();
        }
        f(&s, Encoding::Json, pos, 0);
    }
}

#[cfg(test)]
impl Anchors {
    fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Every tag.
    fn keys(&self) -> impl Iterator<Item = &u32> {
        self.heads.keys()
    }

    /// Every tag with its chain's fingerprints.
    fn iter(&self) -> impl Iterator<Item = (&u32, Vec<&Fingerprint>)> {
        self.heads
            .iter()
            .map(|(t, &head)| (t, self.chain(head).map(|(_, f)| f).collect()))
    }

    /// Every chain's fingerprints.
    fn values(&self) -> impl Iterator<Item = Vec<&Fingerprint>> {
        self.iter().map(|(_, l)| l)
    }
}

#[cfg(test)]
impl FingerprintSet {
    /// Every byte this set stores (derived keys, bitset, anchor index and
    /// fingerprints, dedupe map, per-secret bookkeeping), concatenated, for
    /// the "no plaintext is retained" test.
    fn stored_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.keys.confirm);
        for x in self.keys.pre.iter().chain(&self.keys.tag) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for (tag, head) in &self.by_tag.heads {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&head.to_le_bytes());
        }
        for chunk in &self.by_tag.fps.chunks {
            for f in chunk.iter() {
                out.extend_from_slice(&f.hash);
                for x in f.pre.iter().chain(&f.next) {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out.extend_from_slice(&f.k.to_le_bytes());
                out.extend_from_slice(&f.len.to_le_bytes());
                out.extend_from_slice(&f.secret.to_le_bytes());
                out.push(f.encoding as u8);
                out.push(f.pad);
            }
        }
        for i in &self.by_tag.fps.free {
            out.extend_from_slice(&i.to_le_bytes());
        }
        for (h, r) in &self.by_raw {
            out.extend_from_slice(h);
            out.extend_from_slice(&r.to_le_bytes());
        }
        for (r, slot) in &self.slots {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&slot.raw);
        }
        out
    }

    /// How many BLAKE3 confirmations a scan of `buf` attempts (anchor
    /// windows whose prefilter hash and tag both match), matched or not.
    fn confirmations(&self, buf: &[u8]) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i + WIN <= buf.len() {
            let w = if i + 8 <= buf.len() {
                load_u64(&buf[i..]) & WIN_MASK
            } else {
                load_u64(&buf[i + WIN - 8..]) >> 8
            };
            let pre = self.keys.pre(w);
            if let Some(&head) = self.by_tag.heads.get(&self.keys.tag(w)) {
                n += self
                    .by_tag
                    .chain(head)
                    .filter(|(d, f)| f.pre[*d] == pre && i >= f.k as usize + d)
                    .count();
            }
            i += STRIDE;
        }
        n
    }

    /// All stored confirmation hashes.
    fn hashes(&self) -> Vec<Hash> {
        self.by_tag.fps.live().map(|(_, f)| f.hash).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: deterministic test randomness without extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                let x = self.next().to_le_bytes();
                chunk.copy_from_slice(&x[..chunk.len()]);
            }
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v = vec![0; n];
            self.fill(&mut v);
            v
        }
        /// `n` bytes drawn from `alphabet`.
        fn from(&mut self, alphabet: &[u8], n: usize) -> Vec<u8> {
            (0..n)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    fn set() -> FingerprintSet {
        FingerprintSet::new(FingerprintKey::random().unwrap())
    }

    fn contains_sub(hay: &[u8], needle: &[u8]) -> bool {
        needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
    }

    // Independent reference encoders (not the module's).
    fn hex_ref(v: &[u8], upper: bool) -> Vec<u8> {
        let s: String = v.iter().map(|b| format!("{b:02x}")).collect();
        if upper {
            s.to_uppercase().into_bytes()
        } else {
            s.into_bytes()
        }
    }
    fn percent_ref(v: &[u8], upper: bool) -> Vec<u8> {
        let mut out = String::new();
        for &b in v {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else if upper {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push_str(&format!("%{b:02x}"));
            }
        }
        out.into_bytes()
    }
    fn json_ref(v: &str) -> Vec<u8> {
        let s = serde_json::to_string(v).unwrap();
        s.as_bytes()[1..s.len() - 1].to_vec()
    }

    /// Every (form, encoding) of `v` a scan must find, computed with reference
    /// encoders.
    fn reference_forms(v: &[u8]) -> Vec<(Vec<u8>, Encoding)> {
        let mut forms = vec![
            (v.to_vec(), Encoding::Raw),
            (STANDARD.encode(v).into_bytes(), Encoding::Base64),
            (STANDARD_NO_PAD.encode(v).into_bytes(), Encoding::Base64),
            (URL_SAFE.encode(v).into_bytes(), Encoding::Base64url),
            (URL_SAFE_NO_PAD.encode(v).into_bytes(), Encoding::Base64url),
            (hex_ref(v, false), Encoding::Hex),
            (hex_ref(v, true), Encoding::Hex),
            (percent_ref(v, true), Encoding::Percent),
            (percent_ref(v, false), Encoding::Percent),
        ];
        if let Ok(s) = std::str::from_utf8(v) {
            forms.push((json_ref(s), Encoding::Json));
        }
        forms
    }

    /// A secret whose every form is distinct: reserved characters (percent),
    /// escapes (JSON), a letter-bearing %xx (`/` = %2F), non-ASCII UTF-8, and
    /// bytes that give `+`/`/` in base64.
    const TRICKY: &str = "Tr0ub4dor&3 \"q\"/\\\n\t~é>>>?~~~ZZ";

    /// Test 1: every encoding at every offset 0..64 inside random bytes that
    /// cannot take part in any fingerprint (drawn from bytes absent from all
    /// forms of the secret), so the expected result is exactly one match.
    #[test]
    fn every_encoding_at_every_offset() {
        let mut rng = Rng(1);
        let mut s = set();
        let v = TRICKY.as_bytes();
        let r = s.add(v).unwrap();
        let forms = reference_forms(v);
        // Precondition: the forms really are pairwise different.
        for (i, a) in forms.iter().enumerate() {
            for b in &forms[i + 1..] {
                assert_ne!(a.0, b.0, "test secret must make every form distinct");
            }
        }
        let used: Vec<bool> = (0..=255u8)
            .map(|b| forms.iter().any(|f| f.0.contains(&b)))
            .collect();
        let noise: Vec<u8> = (0..=255u8).filter(|&b| !used[b as usize]).collect();
        assert!(noise.len() > 100);
        for (form, enc) in &forms {
            for offset in 0..64 {
                let mut buf = rng.from(&noise, offset);
                buf.extend_from_slice(form);
                let tail = rng.below(40);
                buf.extend(rng.from(&noise, tail));
                let got = s.scan(&buf);
                assert_eq!(
                    got,
                    vec![Match {
                        secret: r,
                        encoding: *enc,
                        offset,
                        len: form.len()
                    }],
                    "{enc:?} form of len {} at offset {offset}",
                    form.len()
                );
            }
        }
    }

    /// Bytes absent from every form of `forms` (they cannot take part in a
    /// match).
    fn noise_for(forms: &[(Vec<u8>, Encoding)]) -> Vec<u8> {
        let noise: Vec<u8> = (0..=255u8)
            .filter(|b| !forms.iter().any(|f| f.0.contains(b)))
            .collect();
        assert!(noise.len() > 100);
        noise
    }

    /// The prefilter's two loops (BMI2 when the CPU has it, and the
    /// portable one) find the same: every form at every offset and every
    /// alignment (mod 2, mod 8: four positions per step), with every tail
    /// length (the group loop and the tail loop both).
    #[test]
    fn both_prefilter_loops_find_every_form_at_every_offset() {
        let mut rng = Rng(21);
        let mut s = set();
        let v = TRICKY.as_bytes();
        let r = s.add(v).unwrap();
        let forms = reference_forms(v);
        let noise = noise_for(&forms);
        for (form, enc) in &forms {
            for offset in 0..24 {
                for tail in 0..16 {
                    let mut buf = rng.from(&noise, offset);
                    buf.extend_from_slice(form);
                    buf.extend(rng.from(&noise, tail));
                    let want = vec![Match {
                        secret: r,
                        encoding: *enc,
                        offset,
                        len: form.len(),
                    }];
                    let what = format!("{enc:?} len {} at {offset}, tail {tail}", form.len());
                    assert_eq!(s.scan_with(&buf, false), want, "portable: {what}");
                    if bmi2() {
                        assert_eq!(s.scan_with(&buf, true), want, "bmi2: {what}");
                    }
                }
            }
        }
    }

    /// A form split across two writes, at every split point, is found once:
    /// in the write that completes it, with the first write's tail carried
    /// in front (as correlation joins them).
    #[test]
    fn a_form_split_across_writes_is_found_once_at_every_split() {
        use crate::correlate::carry::CarryOver;
        let mut rng = Rng(22);
        let mut s = set();
        let v = TRICKY.as_bytes();
        s.add(v).unwrap();
        let forms = reference_forms(v);
        let noise = noise_for(&forms);
        let keep = s.longest_form() - 1;
        for (form, enc) in &forms {
            // Not inside base64 padding (the unpadded form is complete
            // before it, and reported as such), nor past base64's last two
            // characters (the "inside a stream" form, one character
            // shorter, is complete in the first write).
            let body = form.len() - form.iter().rev().take_while(|&&b| b == b'=').count();
            let last = match enc {
                Encoding::Base64 | Encoding::Base64url => body - 2,
                _ => body,
            };
            for split in 1..last {
                let mut carry = CarryOver::default();
                let mut first = rng.from(&noise, 1 + split % 13);
                first.extend_from_slice(&form[..split]);
                let mut second = form[split..].to_vec();
                second.extend(rng.from(&noise, split % 7));
                let mut found = Vec::new();
                for (n, data) in [first, second].iter().enumerate() {
                    let (buf, head) = carry.join((1, 3, 9), data, keep, true);
                    for m in s.scan(&buf) {
                        if m.offset + m.len > head {
                            found.push((n, m.encoding, m.len));
                        }
                    }
                }
                assert_eq!(
                    found,
                    vec![(1, *enc, form.len())],
                    "{enc:?} form of len {} split at {split}",
                    form.len()
                );
            }
        }
    }

    /// Every start parity and every distance to the end of the buffer, for
    /// a minimum-length secret and a longer one (the scan probes even
    /// positions only, and the last window is loaded differently).
    #[test]
    fn every_start_and_end_alignment() {
        let mut rng = Rng(11);
        let mut s = set();
        let short = s.add(b"8bytes!!").unwrap();
        let long = s.add(b"a-rather-longer-secret-value-0123456789").unwrap();
        for (v, r) in [
            (&b"8bytes!!"[..], short),
            (&b"a-rather-longer-secret-value-0123456789"[..], long),
        ] {
            for before in 0..12 {
                for after in 0..12 {
                    let mut buf = rng.from(b"\x00\x01\x02\xfe\xff", before);
                    buf.extend_from_slice(v);
                    buf.extend(rng.from(b"\x00\x01\x02\xfe\xff", after));
                    assert_eq!(
                        s.scan(&buf),
                        vec![Match {
                            secret: r,
                            encoding: Encoding::Raw,
                            offset: before,
                            len: v.len()
                        }],
                        "before={before} after={after}"
                    );
                }
            }
        }
        assert!(s.scan(b"8bytes!").is_empty());
        assert!(s.scan(b"").is_empty());
    }

    /// Test 2: base64 of prefix ++ V ++ suffix, prefixes 0..=5, suffixes
    /// 0..=5, both alphabets, padded and not: found at the first character
    /// that depends only on V, with the right alphabet.
    #[test]
    fn base64_inside_longer_stream() {
        let mut rng = Rng(2);
        for trial in 0..20 {
            let mut s = set();
            // 0xff 0xff 0xff gives '/'/'_' in every alignment, so the two
            // alphabets are told apart; length varies mod 3.
            let mut v = rng.bytes(8 + trial % 7);
            v.splice(3..3, [0xff, 0xff, 0xff]);
            let r = s.add(&v).unwrap();
            for p in 0..=5usize {
                for q in 0..=5usize {
                    let mut plain = rng.bytes(p);
                    plain.extend_from_slice(&v);
                    plain.extend(rng.bytes(q));
                    for (engine, enc) in [
                        (&STANDARD, Encoding::Base64),
                        (&STANDARD_NO_PAD, Encoding::Base64),
                        (&URL_SAFE, Encoding::Base64url),
                        (&URL_SAFE_NO_PAD, Encoding::Base64url),
                    ] {
                        let stream = engine.encode(&plain);
                        let got = s.scan(stream.as_bytes());
                        let want_off = (4 * p).div_ceil(3);
                        assert!(
                            got.iter().all(|m| m.secret == r && m.encoding == enc),
                            "p={p} q={q} {enc:?}: {got:?}"
                        );
                        assert!(
                            got.iter().any(|m| m.offset == want_off),
                            "p={p} q={q} {enc:?}: want offset {want_off}, got {got:?}"
                        );
                    }
                }
            }
        }
        // The motivating case: `echo "user:$SECRET" | base64`.
        let mut s = set();
        let secret = b"hunter2-is-not-a-good-password";
        let r = s.add(secret).unwrap();
        let mut line = b"user:".to_vec();
        line.extend_from_slice(secret);
        line.push(b'\n');
        let out = STANDARD.encode(&line) + "\n";
        let got = s.scan(out.as_bytes());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].secret, got[0].encoding, got[0].offset),
            (r, Encoding::Base64, 7)
        );
    }

    /// Test 3: one trailing newline of the delivery file is not part of the
    /// secret.
    #[test]
    fn trailing_newline_trimmed() {
        for nl in [&b"\n"[..], b"\r\n"] {
            let mut s = set();
            let v = b"s3cr3t-t0ken-value";
            let mut file = v.to_vec();
            file.extend_from_slice(nl);
            let r = s.add(&file).unwrap();
            assert_eq!(s.contains(v), Some(r));
            assert_eq!(s.contains(&file), Some(r));
            assert_eq!(s.add(v), Some(r), "V and V\\n are the same secret");
            assert_eq!(
                s.scan(v),
                vec![Match {
                    secret: r,
                    encoding: Encoding::Raw,
                    offset: 0,
                    len: v.len()
                }]
            );
            assert_eq!(
                s.scan(&file),
                vec![Match {
                    secret: r,
                    encoding: Encoding::Raw,
                    offset: 0,
                    len: v.len()
                }]
            );
            // Only ONE newline is trimmed.
            let mut two = file.clone();
            two.extend_from_slice(nl);
            assert_ne!(s.add(&two), Some(r));
        }
        // A 7-byte value plus newline is still too short.
        assert_eq!(set().add(b"1234567\n"), None);
        assert_eq!(set().add(b"1234567\r\n"), None);
    }

    /// Test 4: short values refused, dedupe, remove.
    #[test]
    fn short_dedupe_remove() {
        let mut s = set();
        for n in 0..MIN_SECRET_LEN {
            assert_eq!(s.add(&b"abcdefghij"[..n]), None, "len {n}");
        }
        assert!(s.is_empty());
        let a = s.add(b"abcdefgh").expect("8 bytes is enough");
        let b = s.add(b"another-secret-value").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.add(b"abcdefgh"), Some(a));
        assert_eq!(s.add(b"another-secret-value"), Some(b));
        assert_eq!(s.len(), 2);
        assert_eq!(s.contains(b"abcdefgh"), Some(a));
        assert_eq!(s.contains(b"abcdefgX"), None);
        assert_eq!(s.contains(b"abcdefg"), None);

        let buf = b"x=abcdefgh y=another-secret-value z=YW5vdGhlci1zZWNyZXQtdmFsdWU=";
        let got = s.scan(buf);
        assert_eq!(got.len(), 3, "{got:?}");
        s.remove(b);
        assert_eq!(s.len(), 1);
        assert_eq!(s.contains(b"another-secret-value"), None);
        assert_eq!(
            s.scan(buf),
            vec![Match {
                secret: a,
                encoding: Encoding::Raw,
                offset: 2,
                len: 8
            }]
        );
        s.remove(b); // unknown refs are ignored
        s.remove(12345);
        // A removed secret added again gets a fresh ref.
        let b2 = s.add(b"another-secret-value").unwrap();
        assert!(b2 != a && b2 != b);
        assert_eq!(s.scan(buf).len(), 3);
        s.remove(a);
        s.remove(b2);
        assert!(s.is_empty());
        assert_eq!(s.anchors, 0);
        assert!(s.by_tag.is_empty());
        assert!(s.scan(buf).is_empty());
    }

    /// Test 5: 64 MiB of random bytes against 1,000 random 16-byte secrets:
    /// zero matches. A false match needs a 32-bit prefilter hit, a 32-bit tag
    /// hit (so about 64M × 14k / 2^64 ≈ 5·10^-8 BLAKE3 confirmations are even
    /// attempted) and then a 128-bit keyed-hash collision (2^-128 each): the
    /// expected number of false positives is 0 for all practical purposes.
    #[test]
    fn no_false_match_on_random_data() {
        let mut rng = Rng(5);
        let mut s = set();
        let secrets: Vec<Vec<u8>> = (0..1000).map(|_| rng.bytes(16)).collect();
        for v in &secrets {
            s.add(v).unwrap();
        }
        assert_eq!(s.len(), 1000);
        let mut buf = vec![0u8; 64 << 20];
        rng.fill(&mut buf);
        assert_eq!(s.scan(&buf), vec![]);
        // ...but the same scanner does find planted secrets.
        for (i, v) in secrets.iter().enumerate().step_by(97) {
            let at = 1000 + i * 4099;
            buf[at..at + 16].copy_from_slice(v);
        }
        let got = s.scan(&buf);
        assert_eq!(got.len(), secrets.iter().step_by(97).count(), "{got:?}");
        assert!(got
            .iter()
            .all(|m| m.encoding == Encoding::Raw && m.len == 16));
    }

    /// Test 6: keys.
    #[test]
    fn keys_are_independent() {
        let a = FingerprintKey::random().unwrap();
        let b = FingerprintKey::random().unwrap();
        assert_ne!(a.0, b.0);
        assert_ne!(a.0, [0u8; 32]);
        assert_eq!(format!("{a:?}"), "FingerprintKey(<redacted>)");

        let v = b"correct horse battery staple";
        let (mut sa, mut sb) = (FingerprintSet::new(a), FingerprintSet::new(b));
        let ra = sa.add(v).unwrap();
        assert_eq!(sb.contains(v), None, "sets are independent");
        sb.add(v).unwrap();
        // No fingerprint, tag or prefilter value in common.
        let ha = sa.hashes();
        assert!(sb.hashes().iter().all(|h| !ha.contains(h)));
        let tags_a: Vec<u32> = sa.by_tag.keys().copied().collect();
        assert!(sb.by_tag.keys().all(|t| !tags_a.contains(t)));

        // A's tables are useless without A's key: transplant them under
        // another key and the secret is no longer found.
        let mut buf = b"password=".to_vec();
        buf.extend_from_slice(v);
        assert_eq!(sa.scan(&buf).len(), 1);
        let FingerprintSet {
            keys: _,
            by_tag,
            by_raw,
            slots,
            next_ref,
            anchors,
            bits,
            bits_log2,
            longest,
            shared,
        } = sa;
        let c = FingerprintKey::random().unwrap();
        let franken = FingerprintSet {
            keys: Keys::derive(&c),
            by_tag,
            by_raw,
            slots,
            next_ref,
            anchors,
            bits,
            bits_log2,
            longest,
            shared,
        };
        assert!(franken.scan(&buf).is_empty());
        assert_eq!(franken.contains(v), None);
        let _ = ra;

        // A fleet key gives the same fingerprints on every agent.
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let (mut f1, mut f2) = (
            FingerprintSet::new(FingerprintKey::from_hex(hex).unwrap()),
            FingerprintSet::new(FingerprintKey::from_hex(hex).unwrap()),
        );
        f1.add(v);
        f2.add(v);
        let mut h1 = f1.hashes();
        let mut h2 = f2.hashes();
        h1.sort();
        h2.sort();
        assert_eq!(h1, h2);
    }

    #[test]
    fn from_hex_errors_do_not_echo_the_key() {
        let good = "a".repeat(64);
        assert!(FingerprintKey::from_hex(&good).is_ok());
        for (bad, want) in [
            ("abcd".to_string(), "got 4 bytes"),
            ("a".repeat(65), "got 65 bytes"),
            (format!(" {}", "a".repeat(63)), "byte 0 is not"),
            (
                format!("{}g{}", "a".repeat(40), "a".repeat(23)),
                "byte 40 is not",
            ),
            (format!("{}\n", "a".repeat(63)), "byte 63 is not"),
            (format!("{}é", "a".repeat(62)), "byte 62 is not"),
        ] {
            let err = FingerprintKey::from_hex(&bad).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains("aaaa"), "error echoes key material: {err}");
        }
    }

    /// Test 7: nothing the set stores contains the plaintext, any of its
    /// encodings, or any 8-byte window of them.
    #[test]
    fn no_plaintext_in_stored_bytes() {
        let mut rng = Rng(7);
        let mut s = set();
        let distinctive = "ZZ-distinctive-SECRET-\"value\"/\\\n-ZZ-0123456789";
        s.add(distinctive.as_bytes()).unwrap();
        // Plenty of others, so the tables are non-trivial.
        for _ in 0..200 {
            let n = 8 + rng.below(60);
            s.add(&rng.from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_./+", n))
                .unwrap();
        }
        let stored = s.stored_bytes();
        assert!(stored.len() > 100_000);
        let mut forms = reference_forms(distinctive.as_bytes());
        // The stream-aligned base64 forms too.
        for a in 0..3 {
            let mut p = vec![0u8; a];
            p.extend_from_slice(distinctive.as_bytes());
            let e = STANDARD_NO_PAD.encode(&p);
            forms.push((
                e.as_bytes()[(4 * a).div_ceil(3)..].to_vec(),
                Encoding::Base64,
            ));
        }
        for (form, enc) in &forms {
            for w in form.windows(6) {
                assert!(
                    !contains_sub(&stored, w),
                    "{enc:?} window {:?} is stored",
                    String::from_utf8_lossy(w)
                );
            }
        }
        // Debug shows counts only.
        let dbg = format!("{s:?}");
        assert!(
            dbg.starts_with("FingerprintSet { secrets: 201, fingerprints: "),
            "{dbg}"
        );
        assert!(!dbg.contains("distinctive"));
    }

    /// The JSON form is exactly serde_json's escaping, for every ASCII byte.
    #[test]
    fn json_matches_serde_json() {
        let mut s = set();
        let v: String = (0u8..0x80).map(char::from).chain("é€😀".chars()).collect();
        let r = s.add(v.as_bytes()).unwrap();
        let want = json_ref(&v);
        let got = s.scan(&want);
        assert_eq!(
            got,
            vec![Match {
                secret: r,
                encoding: Encoding::Json,
                offset: 0,
                len: want.len()
            }]
        );
        // Worst-case expansion (every byte escaped) does not overflow the
        // fixed-capacity scratch buffers (they panic instead of reallocating).
        let ctl: Vec<u8> = (0u8..0x20).cycle().take(300).collect();
        let r = s.add(&ctl).unwrap();
        let want = json_ref(std::str::from_utf8(&ctl).unwrap());
        assert!(want.len() > 5 * 300);
        assert!(s
            .scan(&want)
            .iter()
            .any(|m| m.secret == r && m.encoding == Encoding::Json));
        assert!(s
            .scan(&percent_ref(&ctl, false))
            .iter()
            .any(|m| m.secret == r && m.encoding == Encoding::Percent));
    }

    /// Secrets that share a long common prefix (token formats) get distinct
    /// anchors, so a buffer full of that prefix triggers no confirmations.
    #[test]
    fn shared_prefixes_get_distinct_anchors() {
        let mut rng = Rng(8);
        let mut s = set();
        let alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut secrets = Vec::new();
        for _ in 0..300 {
            let mut v = b"-----BEGIN OPENSSH PRIVATE KEY-----\nsk-proj-".to_vec();
            v.extend(rng.from(alnum, 24));
            s.add(&v).unwrap();
            secrets.push(v);
        }
        let raw_tags: Vec<u32> = s
            .by_tag
            .iter()
            .filter(|(_, l)| l.iter().any(|c| c.encoding == Encoding::Raw))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            raw_tags.len(),
            2 * 300,
            "raw anchor windows must not be shared"
        );
        for l in s.by_tag.values() {
            assert!(
                l.iter().all(|c| c.secret == l[0].secret),
                "an anchor tag is shared by two secrets"
            );
        }
        for (i, v) in secrets.iter().enumerate() {
            let got = s.scan(v);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].secret, i as u32);
        }
    }

    /// Secrets sharing a long random-looking suffix (where the 3/4 target
    /// lies, so content heuristics cannot help): only the first few anchor
    /// inside it; a buffer holding just the shared part costs a handful of
    /// confirmations, not one per secret.
    #[test]
    fn shared_structure_does_not_attract_anchors() {
        let mut rng = Rng(12);
        let alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let shared = rng.from(alnum, 40);
        let mut s = set();
        for _ in 0..200 {
            let mut v = rng.from(alnum, 24);
            v.extend_from_slice(&shared);
            s.add(&v).unwrap();
        }
        for l in s.by_tag.values() {
            assert!(
                l.iter().all(|c| c.secret == l[0].secret),
                "an anchor tag is shared by two secrets"
            );
        }
        // Another value with the same suffix, at both parities.
        let mut cost = 0;
        for lead in [24, 25] {
            let mut buf = rng.from(alnum, lead);
            buf.extend_from_slice(&shared);
            cost += s.confirmations(&buf);
            assert!(s.scan(&buf).is_empty());
        }
        assert!(cost <= 12, "{cost} confirmations for the shared part alone");
    }

    /// Different secrets overlapping in a buffer are all reported; nested
    /// matches of one secret are collapsed to the longest.
    #[test]
    fn overlap_rules() {
        let mut s = set();
        let a = s.add(b"password12345678").unwrap();
        let b = s.add(b"password12345678extra").unwrap();
        let got = s.scan(b"..password12345678extra..");
        assert_eq!(
            got,
            vec![
                Match {
                    secret: a,
                    encoding: Encoding::Raw,
                    offset: 2,
                    len: 16
                },
                Match {
                    secret: b,
                    encoding: Encoding::Raw,
                    offset: 2,
                    len: 21
                },
            ]
        );
        // Padded base64 also contains the unpadded and aligned forms.
        let enc = STANDARD.encode(b"password12345678");
        let got = s.scan(enc.as_bytes());
        assert_eq!(
            got,
            vec![Match {
                secret: a,
                encoding: Encoding::Base64,
                offset: 0,
                len: enc.len()
            }]
        );
        // Two occurrences, two matches.
        let got = s.scan(b"password12345678 password12345678");
        assert_eq!(
            got.iter().map(|m| m.offset).collect::<Vec<_>>(),
            vec![0, 17]
        );
    }

    #[test]
    fn encoding_serializes_lowercase() {
        for e in [
            Encoding::Raw,
            Encoding::Base64,
            Encoding::Base64url,
            Encoding::Hex,
            Encoding::Percent,
            Encoding::Json,
        ] {
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&Encoding::Base64url).unwrap(),
            "\"base64url\""
        );
    }

    /// The padded base64 form is found through the unpadded fingerprint: it
    /// is reported with its padding only when all of the padding follows.
    #[test]
    fn padding_is_reported_only_when_complete() {
        let mut s = set();
        for v in [&b"pad-two-needed-x"[..], b"pad-one-needed-xy"] {
            let r = s.add(v).unwrap();
            let padded = STANDARD.encode(v);
            let unpadded = STANDARD_NO_PAD.encode(v);
            let pad = padded.len() - unpadded.len();
            assert!(pad > 0);
            for have in 0..=pad {
                for tail in ["", " rest"] {
                    let buf = format!("x {unpadded}{}{tail}", &padded[unpadded.len()..][..have]);
                    let got = s.scan(buf.as_bytes());
                    let want = if have == pad {
                        padded.len()
                    } else {
                        unpadded.len()
                    };
                    assert_eq!(
                        got,
                        vec![Match {
                            secret: r,
                            encoding: Encoding::Base64,
                            offset: 2,
                            len: want
                        }],
                        "{have} of {pad} padding characters, tail {tail:?}"
                    );
                }
            }
        }
    }

    /// Adds and removals in any order keep the anchor chains, the arena and
    /// the counts consistent, and scans find exactly the secrets still known.
    #[test]
    fn removals_keep_the_index_consistent() {
        let mut rng = Rng(13);
        let mut s = set();
        let alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        // Shared prefixes, so that some tags hold anchors of several forms.
        let mut live: Vec<(SecretRef, Vec<u8>)> = Vec::new();
        let mut gone: Vec<Vec<u8>> = Vec::new();
        for step in 0..600 {
            if live.is_empty() || rng.below(3) != 0 {
                let mut v = b"tok_".to_vec();
                let n = 8 + rng.below(40);
                v.extend(rng.from(alnum, n));
                let r = s.add(&v).unwrap();
                if !live.iter().any(|(x, _)| *x == r) {
                    live.push((r, v));
                }
            } else {
                let (r, v) = live.swap_remove(rng.below(live.len()));
                s.remove(r);
                gone.push(v);
            }
            if step % 50 != 49 {
                continue;
            }
            // Every live fingerprint's two anchors are in the chains exactly
            // once; nothing else is.
            let fps = &s.by_tag.fps;
            let mut seen = vec![0u8; 2 * fps.len as usize];
            for &head in s.by_tag.heads.values() {
                assert_ne!(head, NONE, "empty chain kept");
                let mut a = head;
                while a != NONE {
                    seen[a as usize] += 1;
                    let f = fps.get(a >> 1);
                    assert_ne!(f.secret, FREE, "freed fingerprint in a chain");
                    a = f.next[(a & 1) as usize];
                }
            }
            let nlive = fps.live().count();
            for (i, f) in fps.live() {
                assert!(live.iter().any(|(r, _)| *r == f.secret));
                assert_eq!(seen[2 * i as usize], 1);
                assert_eq!(seen[2 * i as usize + 1], 1);
            }
            assert_eq!(seen.iter().map(|&x| x as usize).sum::<usize>(), 2 * nlive);
            assert_eq!(s.anchors, 2 * nlive);
            assert_eq!(nlive + fps.free.len(), fps.len as usize);
            assert_eq!(s.len(), live.len());
            for (r, v) in &live {
                assert_eq!(s.contains(v), Some(*r));
                let mut buf = b"k=".to_vec();
                buf.extend_from_slice(v);
                assert_eq!(
                    s.scan(&buf),
                    vec![Match {
                        secret: *r,
                        encoding: Encoding::Raw,
                        offset: 2,
                        len: v.len()
                    }]
                );
                let e = STANDARD.encode(v);
                assert!(s
                    .scan(e.as_bytes())
                    .iter()
                    .any(|m| m.secret == *r && m.len == e.len()));
            }
            for v in &gone {
                if live.iter().any(|(_, l)| l == v) {
                    continue;
                }
                assert_eq!(s.contains(v), None);
                assert!(s.scan(v).iter().all(|m| m.len != v.len()));
            }
        }
    }
}

/// A secret's fingerprints as another node of the fleet imports them: only
/// keyed hashes (the 128-bit confirmation hashes, the anchors' 32-bit
/// prefilter and tag hashes), offsets, lengths and encodings; the same as
/// this node stores, never the value. Useful only with the same key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedSecret {
    /// Keyed hash of the raw value, hex (dedupe across nodes).
    pub raw: String,
    pub forms: Vec<SharedForm>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedForm {
    pub tags: [u32; 2],
    pub pre: [u32; 2],
    /// Keyed hash of the form, hex.
    pub hash: String,
    pub k: u32,
    pub len: u32,
    pub encoding: String,
    pub pad: u8,
}

fn hex16(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex16(s: &str) -> Option<Hash> {
    if s.len() != 2 * HASH_LEN {
        return None;
    }
    let mut h = [0u8; HASH_LEN];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(h)
}

const ENCODINGS: [Encoding; 6] = [
    Encoding::Raw,
    Encoding::Base64,
    Encoding::Base64url,
    Encoding::Hex,
    Encoding::Percent,
    Encoding::Json,
];

impl SharedSecret {
    fn of(raw: &Hash, forms: &[Form]) -> Self {
        SharedSecret {
            raw: hex16(raw),
            forms: forms
                .iter()
                .map(|(tags, f)| SharedForm {
                    tags: *tags,
                    pre: f.pre,
                    hash: hex16(&f.hash),
                    k: f.k,
                    len: f.len,
                    encoding: f.encoding.as_str().to_string(),
                    pad: f.pad,
                })
                .collect(),
        }
    }
}

impl FingerprintSet {
    /// Keep what [`add`](Self::add) learns for [`take_shared`](Self::take_shared).
    pub fn share_learned(&mut self) {
        self.shared.get_or_insert_with(Vec::new);
    }

    /// Secrets learned since the last call, as the fleet shares them.
    pub fn take_shared(&mut self) -> Vec<(SecretRef, SharedSecret)> {
        self.shared.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A short public id of the key (a keyed hash of a constant): nodes
    /// with different keys cannot use each other's fingerprints.
    pub fn key_id(&self) -> String {
        hex16(&self.keys.confirm(b"monitor fleet fingerprint key id"))[..16].to_string()
    }

    /// Another node's secret: its fingerprints are matched here like ours.
    /// Returns its ref and whether it was new (a secret known here already,
    /// by value, keeps its ref). `None`: malformed.
    pub fn import(&mut self, s: &SharedSecret) -> Option<(SecretRef, bool)> {
        let raw = unhex16(&s.raw)?;
        if let Some(&r) = self.by_raw.get(&raw) {
            return Some((r, false));
        }
        let mut forms = Vec::with_capacity(s.forms.len());
        for f in &s.forms {
            let encoding = *ENCODINGS.iter().find(|e| e.as_str() == f.encoding)?;
            if (f.len as usize) < MIN_SECRET_LEN || f.k as usize + WIN + STRIDE - 1 > f.len as usize
            {
                return None;
            }
            forms.push((
                f.tags,
                Fingerprint {
                    hash: unhex16(&f.hash)?,
                    pre: f.pre,
                    next: [NONE; 2],
                    k: f.k,
                    len: f.len,
                    secret: 0,
                    encoding,
                    pad: f.pad,
                },
            ));
        }
        if forms.is_empty() {
            return None;
        }
        let r = self.next_ref;
        self.next_ref = self.next_ref.checked_add(1)?;
        self.insert_forms(r, raw, forms);
        Some((r, true))
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn another_nodes_fingerprints_match_here_and_carry_no_plaintext() {
        let value = b"fleet-secret-0123456789abcdef";
        let mut a = FingerprintSet::new(FingerprintKey::from_hex(KEY).unwrap());
        a.share_learned();
        let ra = a.add(value).unwrap();
        let shared = a.take_shared();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].0, ra);
        let json = serde_json::to_string(&shared[0].1).unwrap();
        for form in [
            &value[..],
            STANDARD.encode(value).as_bytes(),
            hex::encode_lower(value).as_bytes(),
        ] {
            assert!(
                !json.as_bytes().windows(form.len()).any(|w| w == form),
                "plaintext in {json}"
            );
        }
        assert!(a.take_shared().is_empty());
        let mut b = FingerprintSet::new(FingerprintKey::from_hex(KEY).unwrap());
        assert_eq!(a.key_id(), b.key_id());
        let decoded: SharedSecret = serde_json::from_str(&json).unwrap();
        let (rb, new) = b.import(&decoded).unwrap();
        assert!(new);
        assert!(b.import(&decoded).is_some_and(|(r, new)| r == rb && !new));
        let mut buf = b"GET /?t=".to_vec();
        buf.extend_from_slice(STANDARD.encode(value).as_bytes());
        let m = b.scan(&buf);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].secret, m[0].encoding), (rb, Encoding::Base64));
        assert!(b.scan(value).iter().any(|m| m.encoding == Encoding::Raw));
        // Imported forms are not shared again.
        b.share_learned();
        assert!(b.take_shared().is_empty());
        // Another key: a different id, and nothing matches.
        let mut c = FingerprintSet::new(FingerprintKey::random().unwrap());
        assert_ne!(c.key_id(), a.key_id());
        c.import(&decoded).unwrap();
        assert!(c.scan(value).is_empty());
        // Malformed: refused.
        let mut bad = decoded.clone();
        bad.forms[0].hash = "zz".into();
        assert!(FingerprintSet::new(FingerprintKey::from_hex(KEY).unwrap())
            .import(&bad)
            .is_none());
    }

    mod hex {
        pub fn encode_lower(v: &[u8]) -> String {
            v.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}
