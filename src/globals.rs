//! [`GlobalValue`]: a WebAssembly instance's mutable global, carried bit-exact.

/// How many mutable globals an agent carries at most.
///
/// Rust and C modules have one (the stack pointer) or a handful; the limit keeps an agent's size
/// fixed without an allocator. More is [`CellError::CapacityExceeded`](crate::CellError).
pub const MAX_GLOBALS: usize = 32;

/// The fixed-capacity list an agent and a snapshot keep their globals in.
pub(crate) type Globals = heapless::Vec<GlobalValue, MAX_GLOBALS>;

/// The value of one mutable WebAssembly global.
///
/// Floats are kept as their bit patterns, so every value, NaN payloads included, survives a
/// migration unchanged, and equality is bit equality.
///
/// ```
/// use mielin_cells::GlobalValue;
///
/// let nan = GlobalValue::from_f32(f32::from_bits(0x7fc0_0001)); // a NaN with a payload
/// assert_eq!(nan, GlobalValue::F32(0x7fc0_0001)); // bit equality: NaN equals itself
/// assert_ne!(GlobalValue::from_f64(0.0), GlobalValue::from_f64(-0.0));
/// assert_eq!(GlobalValue::I32(-1), GlobalValue::I32(-1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalValue {
    /// An `i32` global.
    I32(i32),
    /// An `i64` global.
    I64(i64),
    /// An `f32` global, as its IEEE 754 bits.
    F32(u32),
    /// An `f64` global, as its IEEE 754 bits.
    F64(u64),
}

impl GlobalValue {
    /// An `f32` global holding `v`.
    pub fn from_f32(v: f32) -> Self {
        GlobalValue::F32(v.to_bits())
    }

    /// An `f64` global holding `v`.
    pub fn from_f64(v: f64) -> Self {
        GlobalValue::F64(v.to_bits())
    }
}

/// Copies `values` into a fixed-capacity list, or says how many were asked for.
pub(crate) fn collect(values: &[GlobalValue]) -> Result<Globals, crate::CellError> {
    Globals::from_slice(values).map_err(|_| crate::CellError::CapacityExceeded {
        what: crate::Capacity::Globals,
        capacity: MAX_GLOBALS,
        requested: values.len(),
    })
}
