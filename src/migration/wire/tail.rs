//! The postcard-encoded fields both versions carry: globals and policy (version 2's tail, part of
//! version 1's body), their canonical lengths, and the policy's validation.

use crate::globals::Globals;
use crate::{Arch, DecodeError, GlobalValue, Policy, MAX_ARCHITECTURES};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version 2's tail: what follows the binary and memory, before any signature block.
#[derive(Serialize, Deserialize)]
pub(crate) struct Tail<'a> {
    pub globals: WireGlobals,
    pub min_battery_percent: u8,
    pub max_latency_ms: u32,
    #[serde(serialize_with = "bytes")]
    pub preferred_architectures: &'a [u8],
}

/// The longest canonical tail: 32 globals of at most 11 bytes, the count, the battery byte, a
/// 5-byte latency, 8 architecture tags and their count.
pub(crate) const MAX_TAIL_LEN: usize = 1 + 32 * 11 + 1 + 5 + 1 + MAX_ARCHITECTURES;

impl<'a> Tail<'a> {
    pub fn of(globals: &Globals, policy: &Policy, tags: &'a mut [u8; MAX_ARCHITECTURES]) -> Self {
        Tail {
            globals: WireGlobals(globals.clone()),
            min_battery_percent: policy.min_battery_percent,
            max_latency_ms: policy.max_latency_ms,
            preferred_architectures: arch_tags(policy, tags),
        }
    }

    pub fn len(&self) -> usize {
        globals_len(&self.globals.0)
            + 1
            + varint_len(self.max_latency_ms.into())
            + bytes_len(self.preferred_architectures)
    }

    pub fn policy(&self) -> Result<Policy, DecodeError> {
        decode_policy(
            self.min_battery_percent,
            self.max_latency_ms,
            self.preferred_architectures,
        )
    }
}

/// The architecture tags of `policy`, written into `tags`.
pub(crate) fn arch_tags<'a>(policy: &Policy, tags: &'a mut [u8; MAX_ARCHITECTURES]) -> &'a [u8] {
    let archs = &policy.preferred_architectures;
    for (tag, arch) in tags.iter_mut().zip(archs) {
        *tag = arch.tag();
    }
    &tags[..archs.len()]
}

/// Byte fields go out as one length-prefixed run, not element by element (serde's default for
/// slices), which would be about 50 times slower. Decoding `&[u8]` already borrows the run.
pub(crate) fn bytes<S: Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

/// Bytes in the LEB128 varint postcard writes for `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A length-prefixed byte run.
pub(crate) fn bytes_len(b: &[u8]) -> usize {
    varint_len(b.len() as u64) + b.len()
}

pub(crate) fn globals_len(globals: &Globals) -> usize {
    varint_len(globals.len() as u64) + globals.iter().map(global_len).sum::<usize>()
}

fn global_len(g: &GlobalValue) -> usize {
    // One byte of variant tag (there are four), then the value as postcard writes it.
    1 + match *g {
        GlobalValue::I32(v) => varint_len(zigzag(v.into())),
        GlobalValue::I64(v) => varint_len(zigzag(v)),
        GlobalValue::F32(bits) => varint_len(bits.into()),
        GlobalValue::F64(bits) => varint_len(bits),
    }
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// A global on the wire: postcard writes the variant index as a varint, then the value
/// (signed integers zigzag-encoded, floats as their bit patterns).
#[derive(Serialize, Deserialize)]
enum WireGlobal {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

pub(crate) struct WireGlobals(pub Globals);

impl Serialize for WireGlobals {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|g| match *g {
            GlobalValue::I32(v) => WireGlobal::I32(v),
            GlobalValue::I64(v) => WireGlobal::I64(v),
            GlobalValue::F32(v) => WireGlobal::F32(v),
            GlobalValue::F64(v) => WireGlobal::F64(v),
        }))
    }
}

impl<'de> Deserialize<'de> for WireGlobals {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(GlobalsVisitor)
    }
}

struct GlobalsVisitor;

impl<'de> Visitor<'de> for GlobalsVisitor {
    type Value = WireGlobals;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "at most {} globals", crate::MAX_GLOBALS)
    }

    // Stops at the first global past capacity, so a huge count costs nothing.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireGlobals, A::Error> {
        let mut globals = Globals::new();
        while let Some(g) = seq.next_element::<WireGlobal>()? {
            let g = match g {
                WireGlobal::I32(v) => GlobalValue::I32(v),
                WireGlobal::I64(v) => GlobalValue::I64(v),
                WireGlobal::F32(v) => GlobalValue::F32(v),
                WireGlobal::F64(v) => GlobalValue::F64(v),
            };
            globals
                .push(g)
                .map_err(|_| de::Error::invalid_length(globals.len() + 1, &self))?;
        }
        Ok(WireGlobals(globals))
    }
}

pub(crate) fn decode_policy(
    min_battery_percent: u8,
    max_latency_ms: u32,
    tags: &[u8],
) -> Result<Policy, DecodeError> {
    if tags.len() > MAX_ARCHITECTURES {
        return Err(DecodeError::TooManyArchitectures {
            capacity: MAX_ARCHITECTURES,
            found: tags.len(),
        });
    }
    let mut preferred_architectures = heapless::Vec::new();
    for &tag in tags {
        let arch = Arch::from_tag(tag).ok_or(DecodeError::UnknownArchitecture { tag })?;
        // Cannot fail: the length was checked above.
        let _ = preferred_architectures.push(arch);
    }
    Ok(Policy {
        min_battery_percent,
        max_latency_ms,
        preferred_architectures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_postcard() {
        let mut buf = [0u8; 16];
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX.into(), u64::MAX] {
            let n = postcard::to_slice(&v, &mut buf).unwrap().len();
            assert_eq!(varint_len(v), n, "{v}");
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let n = postcard::to_slice(&v, &mut buf).unwrap().len();
            assert_eq!(varint_len(zigzag(v)), n, "{v}");
        }
    }

    #[test]
    fn the_longest_tail_fits_its_bound() {
        let globals: Globals = (0..32).map(|_| GlobalValue::F64(u64::MAX)).collect();
        let mut policy = Policy::default();
        for _ in 0..MAX_ARCHITECTURES {
            policy.preferred_architectures.push(Arch::X86_64).unwrap();
        }
        let mut tags = [0; MAX_ARCHITECTURES];
        let tail = Tail::of(&globals, &policy, &mut tags);
        assert_eq!(tail.len(), MAX_TAIL_LEN);
        let mut buf = [0u8; MAX_TAIL_LEN];
        assert_eq!(
            postcard::to_slice(&tail, &mut buf).unwrap().len(),
            MAX_TAIL_LEN
        );
    }
}
