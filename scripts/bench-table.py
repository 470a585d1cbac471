#!/usr/bin/env python3
"""Prints the README's benchmark tables from criterion's results in target/criterion.

Run `cargo bench --bench core` first. Each row is a median; each ratio divides by a baseline
measured in the same run (raw sha2 or memcpy over the same bytes).
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
res = {}
for bench in root.glob("**/new/benchmark.json"):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    res[meta["full_id"]] = (est["median"]["point_estimate"], meta.get("throughput") or {})


def t(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns:.3g} ns"


def thr(key):
    ns, tp = res[key]
    b = tp.get("Bytes")
    if not b:
        return ""
    gib = b / ns * 1e9 / 2**30
    return f"{gib:.2f} GiB/s" if gib >= 1 else f"{gib * 1024:.0f} MiB/s"


def row(key, base=None, base2=None):
    ns = res[key][0]
    cells = [key.split("/", 1)[1], t(ns), thr(key)]
    for b in (base, base2):
        if b is not None:
            cells.append(f"{ns / res[b][0]:.2f}x")
    return "| " + " | ".join(cells) + " |"


print("DNA hashing (`Dna::new` = header check + SHA-256) beside raw `sha2::Sha256::digest`:\n")
print("| bench | median | throughput | ÷ raw sha2 | per KiB |")
print("|---|---|---|---|---|")
for size, kib in (("1KiB", 1), ("64KiB", 64), ("1MiB", 1024)):
    for f in ("Dna::new", "raw_sha2"):
        k = f"dna_hash/{f}/{size}"
        ns = res[k][0]
        print(row(k, f"dna_hash/raw_sha2/{size}")[:-1] + f"| {ns / kib:.0f} ns |")

print("\nSerialization (header + postcard body + SHA-256 trailer) beside `memcpy` of the same bytes,")
print("and `memcpy` followed by raw sha2 (the floor for any format with a digest trailer):\n")
print("| bench (binary+memory) | median | throughput | ÷ memcpy | ÷ memcpy+sha2 |")
print("|---|---|---|---|---|")
for shape in ("1KiB+0", "64KiB+64KiB", "1MiB+1MiB"):
    for f in ("serialize_into", "serialize_vec", "memcpy", "memcpy+sha2"):
        print(row(f"serialize/{f}/{shape}", f"serialize/memcpy/{shape}", f"serialize/memcpy+sha2/{shape}"))

print("\nDecoding with every check (trailer digest over all bytes, DNA hash over the binary),")
print("zero-copy and owned, beside `memcpy` and raw sha2 of the same bytes:\n")
print("| bench (binary+memory) | median | throughput | ÷ memcpy | ÷ raw sha2 |")
print("|---|---|---|---|---|")
for shape in ("1KiB+0", "64KiB+64KiB", "1MiB+1MiB"):
    for f in ("view_zero_copy", "deserialize_owned", "memcpy", "raw_sha2"):
        print(row(f"deserialize/{f}/{shape}", f"deserialize/memcpy/{shape}", f"deserialize/raw_sha2/{shape}"))

print("\nAgents (capture and restore of an owned 1 MiB binary + 1 MiB memory copy both):\n")
print("| bench | median | throughput | ÷ memcpy 2 MiB |")
print("|---|---|---|---|")
for k in ("agent/Agent::new/1KiB", "agent/capture/1MiB+1MiB", "agent/restore/1MiB+1MiB", "agent/memcpy/2MiB"):
    print(row(k, None if k.endswith("1KiB") else "agent/memcpy/2MiB"))

if any(k.startswith("live_migration/") for k in res):
    print("\nLive migration of a wasmi agent (`cargo bench --bench live --features wasmi`); throughput")
    print("is memory bytes per second; the module is a few hundred bytes:\n")
    print("| bench | median | throughput | ÷ memcpy |")
    print("|---|---|---|---|")
    for pages in ("1_pages", "16_pages", "64_pages"):
        for f in ("capture+serialize", "deserialize+restore+resume", "full_cycle", "memcpy"):
            print(row(f"live_migration/{f}/{pages}", f"live_migration/memcpy/{pages}"))

if any(k.startswith("encodings/") for k in res):
    print("\nWire encodings of the reference agent (`cargo bench --bench flags --features lz4`);")
    print("throughput counts the agent's 2 MiB (binary + memory) for every encoding:\n")
    print("| bench | median | throughput | ÷ memcpy 2 MiB | ÷ raw sha2 2 MiB |")
    print("|---|---|---|---|---|")
    for name in ("full", "by_ref", "by_ref+chunked", "by_ref+delta_1pct"):
        for f in ("encode", "decode"):
            print(row(f"encodings/{f}/{name}", "encodings/memcpy/2MiB", "encodings/raw_sha2/2MiB"))
    for k in ("encodings/memcpy/2MiB", "encodings/raw_sha2/2MiB"):
        print(row(k, "encodings/memcpy/2MiB", "encodings/raw_sha2/2MiB"))

if any(k.startswith("chunked_images/") for k in res):
    print("\nChunked memory (sparse + LZ4) on three 1 MiB images, whole snapshot encode/decode:\n")
    print("| bench | median | throughput | ÷ memcpy 1 MiB | ÷ raw sha2 1 MiB |")
    print("|---|---|---|---|---|")
    for name in ("mostly_zero", "heap", "random"):
        for f in ("encode", "decode"):
            print(row(f"chunked_images/{f}/{name}", "chunked_images/memcpy/1MiB", "chunked_images/raw_sha2/1MiB"))
    for k in ("chunked_images/memcpy/1MiB", "chunked_images/raw_sha2/1MiB"):
        print(row(k, "chunked_images/memcpy/1MiB", "chunked_images/raw_sha2/1MiB"))
