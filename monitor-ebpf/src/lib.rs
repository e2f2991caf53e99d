#![no_std]
//! Host-side stub so `monitor` can list this crate as a build dependency (the
//! kernel programs are the `monitor` binary target, built for BPF).
