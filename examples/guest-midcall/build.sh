#!/usr/bin/env bash
# Rebuilds tests/midcall-guest.wasm from this crate's source (needs the wasm32-unknown-unknown
# target). The module is the input of the deploy-time transform: tests/midcall.rs transforms it.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-unknown-unknown
cargo build --release --target wasm32-unknown-unknown
cp target/wasm32-unknown-unknown/release/guest_midcall.wasm ../../tests/midcall-guest.wasm
ls -l ../../tests/midcall-guest.wasm
