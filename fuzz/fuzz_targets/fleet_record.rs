//! Signed fleet records (`mesh::fleet`), which arrive from any member of the fleet through a
//! relay nobody trusts. The first byte picks the mode:
//! - 0: the rest as a record: verifying never panics, and a record that verifies speaks for the
//!   node its key hashes to, with every field in range; the freshness and location tables take
//!   it without panicking;
//! - otherwise: the rest as a status or location's fields, signed with the published test key:
//!   `sign` refuses exactly the fields `verify` would refuse, and what it signs verifies to the
//!   same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mielin_cells::mesh::fleet::{
    node_of, sign, Body, FleetRecord, Freshness, Location, Locations, Status, CAPABILITIES,
    MAX_RECORD_LEN,
};
use mielin_cells::{AgentId, Arch, MAX_EPOCH};

const SEED: [u8; 32] = [7; 32];

fn check(r: &FleetRecord) {
    assert_eq!(r.node, node_of(&r.key));
    match r.body {
        Body::Status(s) => {
            assert!(s.battery_percent <= 100 && s.load_percent <= 100);
            assert_eq!(s.capabilities & !CAPABILITIES, 0);
        }
        Body::Location(l) => assert!(l.epoch <= MAX_EPOCH),
    }
    let mut fresh: Freshness<2> = Freshness::default();
    assert!(fresh.admit(r).is_ok());
    assert!(fresh.admit(r).is_err(), "the same record twice is stale");
    let mut at: Locations<2> = Locations::default();
    at.note(r);
    if let Body::Location(l) = r.body {
        assert_eq!(at.resolve(l.agent), Some((r.node, l.epoch)));
    }
}

fn take<const N: usize>(d: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(d.len());
    out[..n].copy_from_slice(&d[..n]);
    *d = &d[n..];
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        if let Ok(r) = FleetRecord::verify(rest) {
            check(&r);
        }
        return;
    }
    let d = &mut rest;
    let seq = u64::from_le_bytes(take(d));
    let [arch, battery, load, caps] = take::<4>(d);
    let body = if mode % 2 == 1 {
        let Some(arch) = Arch::from_tag(arch % 7) else {
            return;
        };
        Body::Status(Status {
            arch,
            battery_percent: battery,
            load_percent: load,
            free_memory_kib: u32::from_le_bytes(take(d)),
            agents: u32::from_le_bytes(take(d)),
            capabilities: u16::from(caps % 8),
        })
    } else {
        Body::Location(Location {
            agent: AgentId::from_bytes(take(d)),
            epoch: u64::from_le_bytes(take(d)) >> (arch % 24),
        })
    };
    let valid = match body {
        Body::Status(s) => {
            s.battery_percent <= 100 && s.load_percent <= 100 && s.capabilities & !CAPABILITIES == 0
        }
        Body::Location(l) => l.epoch <= MAX_EPOCH,
    };
    let mut out = [0u8; MAX_RECORD_LEN];
    match sign(&SEED, seq, &body, &mut out) {
        Some(n) => {
            assert!(valid, "signed out-of-range fields: {body:?}");
            let r = FleetRecord::verify(&out[..n]).expect("what sign wrote verifies");
            assert_eq!((r.seq, r.body), (seq, body));
            check(&r);
        }
        None => assert!(!valid, "refused valid fields: {body:?}"),
    }
});
