#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc = include_str!("../README.md")]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod agent;
mod dna;
mod error;
mod globals;
mod hash;
mod id;
pub mod migration;
mod policy;
#[cfg(feature = "wasmi")]
#[cfg_attr(docsrs, doc(cfg(feature = "wasmi")))]
pub mod runtime;
mod state;
#[cfg(feature = "std")]
mod time;

pub use agent::Agent;
pub use dna::{Dna, WASM_MAGIC, WASM_VERSION};
pub use error::{
    Capacity, CellError, DecodeError, Digested, ExecutionError, LimitedField, MigrationFailure,
    Refusal, SignatureError, Trap,
};
pub use globals::{GlobalValue, MAX_GLOBALS};
pub use hash::{sha256, DigestPrefix};
pub use id::{AgentId, NodeId};
pub use policy::{
    Arch, NodeStatus, Policy, PolicyViolation, LOW_BATTERY_PERCENT, MAX_ARCHITECTURES,
};
pub use state::AgentState;
#[cfg(feature = "std")]
pub use time::unix_now;
