#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc = include_str!("../README.md")]
//!
//! ## Examples with optional features
//!
//! These run as doctests when their features are on (`cargo test --all-features`); they live here
//! rather than in the README so that the README's code needs no hidden lines.
//!
//! ### Live agents (feature `wasmi`)
//!
//! A counter whose total lives in an unexported mutable global runs on node A, is captured between
//! calls, migrates, and resumes on node B where it stopped.
//!
//! ```rust
//! # #[cfg(feature = "wasmi")] {
//! use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
//! use mielin_cells::runtime::{Runtime, Val};
//! use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna, NodeId};
//!
//! // A counter whose total lives in an unexported mutable global.
//! let wasm = wat::parse_str(r#"(module
//!     (global $total (mut i64) (i64.const 0))
//!     (func (export "add") (param i64) (result i64)
//!       (global.set $total (i64.add (global.get $total) (local.get 0)))
//!       (global.get $total)))"#).unwrap();
//! let dna = Dna::new(wasm)?;
//! let runtime = Runtime::new(100_000); // fuel per call
//!
//! // Node A: run, then capture between calls and migrate.
//! let mut live = runtime.start(Agent::with_id(AgentId::derive(dna.hash(), 0), dna), (), |_| Ok(()))?;
//! live.call("add", &[Val::I64(40)])?;
//! let mut agent = live.into_agent()?; // memory and globals captured
//! let mut manager = MigrationManager::with_capacity::<4>(NodeId::from_bytes([1; 16]));
//! let bytes = manager.initiate_migration(&mut agent, NodeId::from_bytes([2; 16]))?.serialize()?;
//!
//! // Node B: restore and resume where it stopped.
//! let restored = MigrationSnapshot::deserialize(&bytes)?.restore()?;
//! let mut resumed = runtime.resume(restored, (), |_| Ok(()))?;
//! assert_eq!(resumed.agent().state(), AgentState::Running);
//! let result = resumed.call("add", &[Val::I64(2)])?;
//! assert!(matches!(result.as_slice(), [Val::I64(42)]));
//! # }
//! # Ok::<(), mielin_cells::CellError>(())
//! ```
//!
//! ### Wire flags and a trust list (features `lz4` and `signatures`)
//!
//! The source sends the agent to `target` at epoch 1 in wire format version 2, whose signature
//! binds the source, the target and the epoch; the DNA by reference, the memory chunked. The
//! target holds the DNA, trusts the source's key, and refuses the same bytes again as a replay.
//!
//! ```rust
//! # #[cfg(all(feature = "lz4", feature = "signatures"))] {
//! use mielin_cells::migration::{
//!     DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, EpochTable, MigrationSnapshot, Route,
//!     StateEncoding, TrustList,
//! };
//! use mielin_cells::{Agent, AgentId, CellError, Dna, NodeId, SignatureError};
//!
//! let (source, target) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
//! let dna = Dna::new(b"\0asm\x01\0\0\0".to_vec())?;
//! let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna.clone());
//! agent.set_wasm_state(vec![0u8; 1 << 20]); // 1 MiB, untouched so far
//! let signer = Ed25519Signer::from_secret(&[42; 32]); // a real key comes from an RNG
//!
//! let now = 1_790_000_000;
//! let snapshot = MigrationSnapshot::capture_at(&agent, Some(source), now)
//!     .with_route(Route { target, epoch: 1 });
//! let bytes = snapshot.serialize_with(&EncodeOptions {
//!     dna_by_reference: true,
//!     state: StateEncoding::Chunked,
//!     signer: Some((&signer, 1)), // in version 2 the sequence number is the epoch
//!     ..Default::default()
//! })?;
//! assert!(bytes.len() < 700); // 1 MiB of zeros and a binary the target already has
//!
//! // The target holds the DNA and trusts the signer for the source node; it remembers epochs
//! // in a journal (in memory here; `FileEpochJournal` survives restarts).
//! let mut store = DnaMap::new();
//! store.insert(&dna);
//! let mut trust = TrustList::<8, _>::new(target, EpochTable::<64>::new());
//! trust.trust(source, signer.verifying_key())?;
//! let opts = DecodeOptions { dna_store: Some(&store), ..Default::default() };
//! let received = trust.deserialize(&bytes, &opts, now)?;
//! assert_eq!(received, snapshot);
//!
//! // The same bytes again are a replay.
//! assert_eq!(
//!     trust.deserialize(&bytes, &opts, now).unwrap_err(),
//!     CellError::SignatureRejected(SignatureError::Stale { last: 1, found: 1 })
//! );
//! # }
//! # Ok::<(), mielin_cells::CellError>(())
//! ```

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod agent;
mod dna;
mod error;
#[cfg(feature = "fleet")]
#[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
pub mod fleet;
mod globals;
mod hash;
mod id;
pub mod mesh;
pub mod migration;
mod policy;
#[cfg(feature = "quic")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub mod quic;
#[cfg(feature = "wasmi")]
#[cfg_attr(docsrs, doc(cfg(feature = "wasmi")))]
pub mod runtime;
mod seal;
mod state;
pub mod storage;
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
    Arch, NodeStatus, ParseArchError, Policy, PolicyViolation, LOW_BATTERY_PERCENT,
    MAX_ARCHITECTURES,
};
pub use seal::{LocalKey, Part, StoreError, MAC_LEN};
pub use state::AgentState;
#[cfg(feature = "std")]
pub use time::unix_now;

/// The largest epoch anything in this crate accepts, 2^48 - 1: the snapshot wire formats, the
/// trust list and the `mesh` protocol share this one range. An agent that moved once a
/// microsecond would need nine years to reach it; the bound keeps a single frame or snapshot
/// from claiming `u64::MAX` and so leaving no epoch above it for any later hand-off.
pub const MAX_EPOCH: u64 = (1 << 48) - 1;

/// The code blocks of `docs/porting.md`, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/porting.md")]
struct PortingGuide;

/// The code blocks of `docs/guide.md` (the library's tour, once the README's), run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
struct Guide;

/// The `heapless` crate (0.9), re-exported because [`Policy::preferred_architectures`] and
/// [`MigrationManager::expire`](migration::MigrationManager::expire) use its `Vec`: a policy
/// literal can name `mielin_cells::heapless::Vec` without a dependency of its own.
pub use heapless;
