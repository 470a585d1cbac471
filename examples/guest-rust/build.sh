#!/usr/bin/env bash
# Rebuilds tests/guest.wasm from this crate's source (needs the wasm32-unknown-unknown target).
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-unknown-unknown
cargo build --release --target wasm32-unknown-unknown
cp target/wasm32-unknown-unknown/release/guest_rust.wasm ../../tests/guest.wasm
ls -l ../../tests/guest.wasm
