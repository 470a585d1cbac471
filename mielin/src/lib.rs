//! The parts of the `mielin` command that need nothing but `std`: the control socket's wire
//! format ([`control`]), kept apart from the node so that the fuzz crate can decode requests
//! without building the QUIC stack. The command itself is `src/main.rs` (feature `cli`, on by
//! default); `docs/cli.md` describes it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod control;
pub mod spec;
