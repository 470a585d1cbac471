//! The call section's payload (`runtime::midcall::SuspendedCall`), which arrives from a peer
//! inside a version-3 container: any bytes either decode to a call that re-encodes to exactly
//! them, or are refused as `BadSuspendedCall`; never a panic, never more than the stated bound.
#![no_main]

use mielin_cells::runtime::midcall::{SuspendedCall, MAX_SUSPENDED_CALL_LEN};
use mielin_cells::ExecutionError;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match SuspendedCall::from_bytes(data) {
        Ok(call) => {
            assert!(data.len() <= MAX_SUSPENDED_CALL_LEN);
            assert_eq!(call.to_bytes().as_deref(), Some(data), "does not re-encode");
        }
        Err(e) => assert_eq!(e, ExecutionError::BadSuspendedCall),
    }
});
