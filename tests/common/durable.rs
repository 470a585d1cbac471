//! A corruption suite for anything a node keeps durably, generic over a [`Durable`] backend.
//!
//! A backend is a store (a journal, a log, a flash partition) seen through its **durable
//! image**: the bytes on its medium, one byte buffer (a file's contents, or a raw flash image).
//! The suite builds a history of committed operations, then damages the images every way a
//! disk, a crash or an attacker without the node's key can, and checks one property:
//!
//! > opening either refuses with an error, or yields exactly the last committed state;
//! > after a torn tail, exactly the last committed state, with the tail gone from the image.
//!
//! Never a different state, never a panic. What it runs:
//! - every operation committed, reopened: the same state, the same image;
//! - truncation at every byte offset, and a cut at every commit boundary;
//! - every byte flipped, and every bit of the header; every header byte flipped in an image
//!   cut at a commit boundary, and in one cut anywhere inside the last commit (two faults);
//! - no image at all (a deleted file) and a zero-length one;
//! - torn tails: after each commit, every prefix of the bytes the next commit adds past the
//!   boundary, and garbage; then the next operation again and a reopen (a torn tail must not
//!   misalign what follows);
//! - the same operations on another node (other id and key), and on this id with another key:
//!   that image, copied here, is refused;
//! - an edited record with its MACs recomputed under the public unkeyed key (the "plain
//!   checksum" an attacker can recompute);
//! - every older committed image (a rollback of the whole store): not detectable from the
//!   image alone, so it must open to exactly its own older state (or be refused), and the
//!   report counts how many opened.
//!
//! Images up to [`Suite::exhaustive_up_to`] bytes get every offset; larger ones a seeded random
//! sample of `MIELIN_FAULT_SAMPLES` offsets per kind (`all`: every offset), seeded by
//! `MIELIN_FAULT_SEED`; a failure names the case and the seed.
//!
//! The trait assumes no file system: a file backend writes the image to a file before opening
//! it; a flash backend hands it to an emulated NorFlash (and overrides [`Durable::cut`], since
//! a flash image does not get shorter: its tail reads erased).
#![allow(dead_code)]

use mielin_cells::{LocalKey, NodeId};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Who opens a store: its node id and node-local key.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The node.
    pub node: NodeId,
    /// Its key.
    pub key: LocalKey,
}

/// A store the suite can damage.
pub trait Durable {
    /// An open store.
    type Store;
    /// One durable operation (one commit).
    type Op: Clone + Debug;
    /// The logical state, compared after every open.
    type State: Clone + Debug + PartialEq;

    /// A name for messages.
    fn name(&self) -> &'static str;
    /// Bytes at the start of an image whose every bit is flipped (the header).
    fn header_len(&self) -> usize;
    /// Whether a torn tail is recovered on open (then refusing one is a failure).
    fn recovers_torn_tail(&self) -> bool;
    /// A new, empty store of a new node.
    fn create(&self, keys: &Keys) -> Result<Self::Store, String>;
    /// Opens `image` (`None`: no image, e.g. a deleted file) as node `keys`; the error's
    /// message when refused.
    fn open(&self, keys: &Keys, image: Option<&[u8]>) -> Result<Self::Store, String>;
    /// Applies one operation; `Ok` once it is durable.
    fn apply(&self, store: &mut Self::Store, op: &Self::Op) -> Result<(), String>;
    /// The durable image as it is now on the store's medium (`None`: there is none).
    fn image(&self, store: &Self::Store) -> Option<Vec<u8>>;
    /// The commit boundary now: the image offset up to which commits reach (a file's length,
    /// a log's write offset).
    fn committed(&self, store: &Self::Store) -> usize;
    /// The logical state.
    fn state(&self, store: &Self::Store) -> Self::State;
    /// The image cut at `at`: what a lost tail looks like on this medium.
    fn cut(&self, image: &[u8], at: usize) -> Vec<u8> {
        image[..at].to_vec()
    }
    /// The attacker's edit of an operation (an epoch lowered, another phase).
    fn edit(&self, op: &Self::Op) -> Self::Op;
}

/// How much to run.
#[derive(Clone, Debug)]
pub struct Suite {
    /// Images up to this many bytes are damaged at every offset.
    pub exhaustive_up_to: usize,
    /// Offsets sampled per kind of damage on larger images.
    pub samples: usize,
    /// The seed of the sample.
    pub seed: u64,
}

impl Suite {
    /// From the environment: `MIELIN_FAULT_SAMPLES` (a number, or `all`; default 256) and
    /// `MIELIN_FAULT_SEED` (default 1).
    pub fn from_env() -> Suite {
        let samples = match std::env::var("MIELIN_FAULT_SAMPLES").as_deref() {
            Ok("all") => usize::MAX,
            Ok(n) => n.parse().expect("MIELIN_FAULT_SAMPLES: a number or `all`"),
            Err(_) => 256,
        };
        let seed = std::env::var("MIELIN_FAULT_SEED")
            .ok()
            .map(|s| s.parse().expect("MIELIN_FAULT_SEED: a number"))
            .unwrap_or(1);
        Suite {
            exhaustive_up_to: 4096,
            samples,
            seed,
        }
    }

    /// The offsets in `0..len` to damage: all of them, or a seeded sample (always with the
    /// first and last few).
    fn offsets(&self, len: usize, salt: u64) -> Vec<usize> {
        if len <= self.exhaustive_up_to || self.samples >= len {
            return (0..len).collect();
        }
        let mut x = self.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut out: Vec<usize> = (0..8.min(len)).chain(len.saturating_sub(8)..len).collect();
        while out.len() < self.samples {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push((x % len as u64) as usize);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What the suite ran and saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run, by kind.
    pub cases: BTreeMap<&'static str, usize>,
    /// Damaged images refused.
    pub refused: usize,
    /// Damaged images that opened to exactly the last committed state (damage that did not
    /// matter, e.g. in an inactive slot).
    pub opened_intact: usize,
    /// Older images (rollbacks) that opened to their own older state: not detectable locally.
    pub rollbacks_opened: usize,
    /// An example refusal message per kind.
    pub messages: BTreeMap<&'static str, String>,
}

enum Outcome<S> {
    Refused(String),
    Opened(S),
}

/// A history: the image, commit boundary and state after each operation (index 0: created).
struct History<B: Durable> {
    images: Vec<Vec<u8>>,
    boundaries: Vec<usize>,
    states: Vec<B::State>,
}

fn build<B: Durable>(b: &B, keys: &Keys, ops: &[B::Op]) -> History<B> {
    let mut store = b
        .create(keys)
        .unwrap_or_else(|e| panic!("{}: create: {e}", b.name()));
    let mut h = History {
        images: vec![b.image(&store).expect("a created store has an image")],
        boundaries: vec![b.committed(&store)],
        states: vec![b.state(&store)],
    };
    for (i, op) in ops.iter().enumerate() {
        b.apply(&mut store, op)
            .unwrap_or_else(|e| panic!("{}: op {i} {op:?}: {e}", b.name()));
        h.images
            .push(b.image(&store).expect("an image after a commit"));
        h.boundaries.push(b.committed(&store));
        h.states.push(b.state(&store));
    }
    h
}

impl Report {
    fn count(&mut self, kind: &'static str) {
        *self.cases.entry(kind).or_insert(0) += 1;
    }
}

/// Runs the whole suite for backend `b` with the operations `ops` (at least one), as node
/// `node`, against `other` (another node) for copies; panics naming the first case that
/// breaks the property.
pub fn run<B: Durable>(b: &B, suite: &Suite, node: &Keys, other: &Keys, ops: &[B::Op]) -> Report {
    assert!(!ops.is_empty(), "the suite needs at least one operation");
    assert_ne!(node.node, other.node, "`other` must be another node");
    let mut r = Report::default();
    let h = build(b, node, ops);
    let n = ops.len();
    let last = &h.images[n];
    let final_state = &h.states[n];

    let open =
        |image: Option<&[u8]>, keys: &Keys, case: &str| -> (Outcome<B::State>, Option<Vec<u8>>) {
            let result = catch_unwind(AssertUnwindSafe(|| b.open(keys, image)));
            match result {
                Err(_) => panic!("{}: open panicked: {case} (seed {})", b.name(), suite.seed),
                Ok(Err(msg)) => {
                    assert!(
                        !msg.trim().is_empty(),
                        "{}: {case}: a refusal without a message",
                        b.name()
                    );
                    (Outcome::Refused(msg), None)
                }
                Ok(Ok(store)) => {
                    let state = b.state(&store);
                    let image = b.image(&store);
                    (Outcome::Opened(state), image)
                }
            }
        };

    // Damage: refused, or exactly the final state (and then the image it left reopens the same).
    let damaged =
        |r: &mut Report, kind: &'static str, image: Option<&[u8]>, keys: &Keys, case: String| {
            r.count(kind);
            match open(image, keys, &case) {
                (Outcome::Refused(msg), _) => {
                    r.refused += 1;
                    r.messages.entry(kind).or_insert(msg);
                }
                (Outcome::Opened(state), after) => {
                    assert_eq!(
                    &state, final_state,
                    "{}: {case}: opened to a state that was never the last committed one (seed {})",
                    b.name(), suite.seed
                );
                    if let (Outcome::Opened(again), _) = open(after.as_deref(), keys, &case) {
                        assert_eq!(
                            &again,
                            final_state,
                            "{}: {case}: reopened differently",
                            b.name()
                        );
                    } else {
                        panic!("{}: {case}: opened once, refused after", b.name());
                    }
                    r.opened_intact += 1;
                }
            }
        };

    // 1. Every committed image reopens to its state and is left as it was.
    for (k, image) in h.images.iter().enumerate() {
        r.count("reopen each commit");
        match open(Some(image), node, &format!("commit {k}")) {
            (Outcome::Opened(state), after) => {
                assert_eq!(
                    state,
                    h.states[k],
                    "{}: commit {k} reopened to another state",
                    b.name()
                );
                assert_eq!(
                    after.as_deref(),
                    Some(&image[..]),
                    "{}: opening commit {k} changed its image",
                    b.name()
                );
            }
            (Outcome::Refused(msg), _) => panic!("{}: commit {k} refused: {msg}", b.name()),
        }
    }

    // 2. Truncation at every offset, and a cut at every commit boundary.
    for at in suite.offsets(last.len(), 1) {
        let image = b.cut(last, at);
        damaged(
            &mut r,
            "truncate",
            Some(&image),
            node,
            format!("truncated to {at} of {} bytes", last.len()),
        );
    }
    for (k, &at) in h.boundaries.iter().enumerate().take(n) {
        if at < last.len() {
            let image = b.cut(last, at);
            damaged(
                &mut r,
                "cut at a commit boundary",
                Some(&image),
                node,
                format!("cut at commit {k}'s boundary {at}"),
            );
        }
    }

    // 3. Every byte flipped; every bit of the header.
    for at in suite.offsets(last.len(), 2) {
        let mut image = last.clone();
        image[at] ^= 0xff;
        damaged(
            &mut r,
            "flip a byte",
            Some(&image),
            node,
            format!("byte {at} flipped"),
        );
    }
    for at in 0..b.header_len().min(last.len()) {
        for bit in 0..8 {
            let mut image = last.clone();
            image[at] ^= 1 << bit;
            damaged(
                &mut r,
                "flip a header bit",
                Some(&image),
                node,
                format!("bit {bit} of header byte {at} flipped"),
            );
        }
    }

    // 3b. Two faults: a header byte flipped and the image cut at a commit boundary (a broken
    //     commit slot must not make an older commit look like the last one).
    let cuts: Vec<usize> = (0..n).filter(|&k| h.boundaries[k] < last.len()).collect();
    let header = b.header_len();
    for i in suite.offsets(cuts.len() * header, 5) {
        let (k, at) = (cuts[i / header], i % header);
        let mut image = b.cut(last, h.boundaries[k]);
        if at >= image.len() {
            continue;
        }
        image[at] ^= 0xff;
        damaged(
            &mut r,
            "flip a header byte and cut at a boundary",
            Some(&image),
            node,
            format!("header byte {at} flipped, cut at commit {k}'s boundary"),
        );
    }

    // 3c. Two faults inside the last commit: a header byte flipped and the image cut anywhere
    //     between the previous commit's boundary and the end (a broken slot must not make a
    //     part of the last commit look like a whole one).
    let from = h.boundaries[n - 1];
    let span = last.len().saturating_sub(from);
    for i in suite.offsets(span * header, 6) {
        let (cut, at) = (from + i / header, i % header);
        let mut image = b.cut(last, cut);
        if at >= image.len() || cut == from {
            continue;
        }
        image[at] ^= 0xff;
        damaged(
            &mut r,
            "flip a header byte and cut inside the last commit",
            Some(&image),
            node,
            format!("header byte {at} flipped, cut at {cut} inside the last commit"),
        );
    }

    // 4. No image; a zero-length one. Both refused: only creating makes an empty store.
    for (kind, image) in [("deleted", None), ("zero-length", Some(&[][..]))] {
        r.count(kind);
        match open(image, node, kind) {
            (Outcome::Refused(msg), _) => {
                r.refused += 1;
                r.messages.entry(kind).or_insert(msg);
            }
            (Outcome::Opened(state), _) => {
                panic!("{}: a {kind} image opened as {state:?}", b.name())
            }
        }
    }

    // 5. Torn tails after each commit: the last committed state, the tail gone, and the next
    //    operation lands where it should. Every (commit, prefix) pair on small histories, a
    //    seeded sample of them on large ones; and garbage after each commit.
    let mut torn: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for k in 0..n {
        let added = h.images[k + 1].len().saturating_sub(h.boundaries[k]);
        pairs.extend((1..=added).map(|j| (k, j)));
    }
    for i in suite.offsets(pairs.len(), 3) {
        let (k, j) = pairs[i];
        let b_k = h.boundaries[k];
        torn.push((k, h.images[k + 1][b_k..b_k + j].to_vec()));
    }
    for k in suite.offsets(n, 4) {
        torn.push((k, vec![0xab; 10]));
    }
    for (k, tail) in torn {
        let base = &h.images[k];
        let boundary = h.boundaries[k];
        let mut image = b.cut(base, boundary);
        image.extend_from_slice(&tail);
        let case = format!("commit {k} then a torn tail of {} bytes", tail.len());
        r.count("torn tail");
        let mut store = match catch_unwind(AssertUnwindSafe(|| b.open(node, Some(&image)))) {
            Err(_) => panic!("{}: open panicked: {case}", b.name()),
            Ok(Err(msg)) => {
                assert!(
                    !b.recovers_torn_tail(),
                    "{}: {case}: refused: {msg}",
                    b.name()
                );
                r.refused += 1;
                r.messages.entry("torn tail").or_insert(msg);
                continue;
            }
            Ok(Ok(store)) => store,
        };
        assert_eq!(
            b.state(&store),
            h.states[k],
            "{}: {case}: not the last committed state",
            b.name()
        );
        assert_eq!(
            b.image(&store).as_deref(),
            Some(&base[..]),
            "{}: {case}: the tail is still there",
            b.name()
        );
        b.apply(&mut store, &ops[k])
            .unwrap_or_else(|e| panic!("{}: {case}: the next operation failed: {e}", b.name()));
        let after = b.image(&store);
        match open(after.as_deref(), node, &case) {
            (Outcome::Opened(state), _) => assert_eq!(
                state,
                h.states[k + 1],
                "{}: {case}: after the next operation and a restart, another state",
                b.name()
            ),
            (Outcome::Refused(msg), _) => panic!(
                "{}: {case}: refused after the next operation: {msg}",
                b.name()
            ),
        }
    }

    // 6. Copies: the same operations by another node, and by this node id under another key.
    let rekeyed = Keys {
        node: node.node,
        key: other.key.clone(),
    };
    for (kind, keys) in [
        ("copy from another node", other),
        ("same id, another key", &rekeyed),
    ] {
        let copy = build(b, keys, ops);
        for (k, image) in copy.images.iter().enumerate() {
            r.count(kind);
            match open(Some(image), node, kind) {
                (Outcome::Refused(msg), _) => {
                    r.refused += 1;
                    r.messages.entry(kind).or_insert(msg);
                }
                (Outcome::Opened(state), _) => {
                    panic!("{}: {kind}, commit {k}, opened as {state:?}", b.name())
                }
            }
        }
    }

    // 7. An edited last operation, every MAC recomputed under the public unkeyed key.
    let unkeyed = Keys {
        node: node.node,
        key: LocalKey::UNKEYED,
    };
    let mut edited: Vec<B::Op> = ops.to_vec();
    edited[n - 1] = b.edit(&ops[n - 1]);
    let forged = build(b, &unkeyed, &edited);
    r.count("edited, MAC recomputed without the key");
    match open(Some(&forged.images[n]), node, "edited") {
        (Outcome::Refused(msg), _) => {
            r.refused += 1;
            r.messages
                .entry("edited, MAC recomputed without the key")
                .or_insert(msg);
        }
        (Outcome::Opened(state), _) => panic!("{}: an edited image opened as {state:?}", b.name()),
    }

    // 8. Rollbacks: an older whole image. Indistinguishable from the store as it was then, so
    //    it may open, but only to exactly its own state.
    for k in 0..n {
        r.count("older image (rollback)");
        match open(Some(&h.images[k]), node, "rollback") {
            (Outcome::Opened(state), _) => {
                assert_eq!(
                    state,
                    h.states[k],
                    "{}: rollback to commit {k}: another state",
                    b.name()
                );
                r.rollbacks_opened += 1;
            }
            (Outcome::Refused(_), _) => r.refused += 1,
        }
    }
    r
}

/// A fresh directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "mielin-durable-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    pub fn file(&self) -> PathBuf {
        self.0.join("journal")
    }

    /// Writes `image` (or nothing) where the journal goes.
    pub fn with(image: Option<&[u8]>) -> Scratch {
        let s = Scratch::new();
        if let Some(bytes) = image {
            std::fs::write(s.file(), bytes).unwrap();
        }
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
