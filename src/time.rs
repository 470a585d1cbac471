//! The one place the crate reads the system clock (only under `std`).

/// Seconds since the Unix epoch from the system clock; 0 if the clock is set before 1970.
///
/// Everything else in the crate takes time as an argument (`*_at` methods), so that
/// targets without a clock and tests with a fixed time use the same code.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
