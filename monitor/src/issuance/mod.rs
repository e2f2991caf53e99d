//! Issuance sources: the record format ([`record`]), following JSON-lines
//! files ([`tail`]), deriving issuance metadata from Vault audit logs
//! ([`vault`]) and JWTs ([`jwt`]), and implicit issuances for discovered
//! secret files ([`discover`]).
pub mod discover;
pub mod jwt;
pub mod record;
pub mod source;
pub mod tail;
pub mod vault;
pub use record::*;
