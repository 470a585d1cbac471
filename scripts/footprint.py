#!/usr/bin/env python3
"""Prints the Cortex-M firmware's footprint for the README: sections from llvm-size, and the
share of each crate in flash from llvm-nm symbol sizes.

Build both firmwares first (see the README's "Runs on" section). Needs the rustup component
llvm-tools. Usage: python3 scripts/footprint.py
"""
import pathlib
import re
import subprocess

root = pathlib.Path(__file__).resolve().parent.parent
fw = root / "examples/firmware-cortex-m"
fw_wasmi = root / "examples/firmware-wasmi"
sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
llvm = pathlib.Path(sysroot) / "lib/rustlib/x86_64-unknown-linux-gnu/bin"
CRATES = ["mielin_cells", "sha2", "digest", "postcard", "serde_core", "serde", "heapless", "uuid",
          "embedded_alloc", "linked_list_allocator", "cortex_m_semihosting", "cortex_m_rt",
          "cortex_m", "panic_semihosting", "firmware_cortex_m", "compiler_builtins", "core",
          "wasmi_core", "wasmi_ir", "wasmi_collections", "wasmi", "wasmparser", "wasm_encoder",
          "lz4_flex", "cobs", "libm", "alloc", "firmware_wasmi"]


def sections(elf):
    out = subprocess.run([llvm / "llvm-size", "-A", elf], capture_output=True, text=True, check=True).stdout
    return {m[0]: int(m[1]) for m in re.findall(r"^(\.\S+)\s+(\d+)", out, re.M)}


def shares(elf):
    out = subprocess.run([llvm / "llvm-nm", "--print-size", "--radix=d", "-C", elf],
                         capture_output=True, text=True, check=True).stdout
    by = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[2] not in "tTrR":
            continue
        size, name = int(parts[1]), parts[3]
        crate = next((c for c in CRATES if re.search(r"(^|[^a-z_])" + c + "(::|\.\.)", name)), "unattributed")
        by[crate] = by.get(crate, 0) + size
    return by


rows = []
# The wasmi firmware's heap is the board's 16 MiB PSRAM, outside the linker's sections: its
# static RAM below does not include it.
for label, folder, feature in (("no allocator", fw, None), ("alloc (16 KiB heap)", fw, "alloc"),
                               ("wasmi + mesh (firmware-wasmi)", fw_wasmi, None)):
    subprocess.run(["cargo", "build", "--release", "-q"] + (["--features", feature] if feature else []),
                   cwd=folder, check=True)
    elf = folder / "target/thumbv7m-none-eabi/release" / folder.name
    s = sections(elf)
    flash = s.get(".vector_table", 0) + s.get(".text", 0) + s.get(".rodata", 0) + s.get(".data", 0)
    ram = s.get(".data", 0) + s.get(".bss", 0) + s.get(".uninit", 0)
    rows.append((label, s, flash, ram, shares(elf)))

print("| build | .text | .rodata | flash (vectors+text+rodata+data) | static RAM (.data+.bss) |")
print("|---|---|---|---|---|")
for label, s, flash, ram, _ in rows:
    print(f"| {label} | {s.get('.text', 0):,} B | {s.get('.rodata', 0):,} B | {flash:,} B ({flash / 1024:.1f} KiB) | {ram:,} B |")
print()
print("Flash by crate (symbol sizes from llvm-nm; with LTO, code inlined into a caller counts for the caller):")
print()
names = sorted({c for r in rows for c in r[4]}, key=lambda c: -rows[0][4].get(c, 0))
print("| crate | " + " | ".join(r[0] for r in rows) + " |")
print("|---|" + "---|" * len(rows))
for c in names:
    print(f"| {c} | " + " | ".join(f"{r[4].get(c, 0):,} B" for r in rows) + " |")
