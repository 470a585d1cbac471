//! An agent compiled by rustc for `wasm32-unknown-unknown`, with the standard library's
//! allocator: each step does heap work in a `Vec` and a `BTreeMap`, as ordinary Rust agents do.
//! `tests/rust_guest.rs` runs it through the runtime; `build.sh` rebuilds `tests/guest.wasm`.

use std::cell::RefCell;
use std::collections::BTreeMap;

struct State {
    history: Vec<i64>,
    counts: BTreeMap<i32, u32>,
    total: i64,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { history: Vec::new(), counts: BTreeMap::new(), total: 0 })
    };
}

/// Records `x`: appends to the history, counts it by bucket, rebuilds a sorted window.
#[no_mangle]
pub extern "C" fn step(x: i32) -> i64 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.history.push(i64::from(x));
        *s.counts.entry(x % 97).or_insert(0) += 1;
        let start = s.history.len().saturating_sub(64);
        let mut window: Vec<i64> = s.history[start..].to_vec();
        window.sort_unstable();
        let median = window[window.len() / 2];
        s.total = s.total.wrapping_add(median);
        s.total
    })
}

/// A digest of everything the agent holds on its heap.
#[no_mangle]
pub extern "C" fn digest() -> i64 {
    STATE.with(|s| {
        let s = s.borrow();
        let mut h: i64 = s.total;
        for (k, v) in &s.counts {
            h = h
                .wrapping_mul(31)
                .wrapping_add(i64::from(*k) * 1_000 + i64::from(*v));
        }
        for x in &s.history {
            h = h.rotate_left(5) ^ x;
        }
        h
    })
}

/// One long call: builds `n` entries in a `Vec` and a `BTreeMap` and folds them, many
/// instructions in a single call for large `n`.
#[no_mangle]
pub extern "C" fn work(n: i32) -> i64 {
    let n = n.max(0) as usize;
    let values: Vec<i64> = (0..n as i64)
        .map(|i| i.wrapping_mul(2_654_435_761) % 10_007)
        .collect();
    let mut map = BTreeMap::new();
    for (i, v) in values.iter().enumerate() {
        *map.entry(*v).or_insert(0i64) += i as i64;
    }
    map.iter()
        .fold(0i64, |h, (k, v)| h.rotate_left(7) ^ k.wrapping_add(*v))
}
