//! The deploy-time transform's record (`runtime::transform::TransformRecord`), which `mielin
//! inspect` reads from any module's custom section: any payload either decodes to a record that
//! re-encodes to exactly it, or is refused; and a module carrying the bytes as that section is
//! found or not without a panic.
#![no_main]

use mielin_cells::runtime::transform::{TransformRecord, RECORD_SECTION};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(record) = TransformRecord::from_bytes(data) {
        assert_eq!(
            record.to_bytes().as_deref(),
            Some(data),
            "does not re-encode"
        );
    }
    // The same bytes as the record section of a minimal module.
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let mut body = vec![RECORD_SECTION.len() as u8];
    body.extend_from_slice(RECORD_SECTION.as_bytes());
    body.extend_from_slice(data);
    module.push(0);
    let mut n = body.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        module.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    }
    module.extend_from_slice(&body);
    assert_eq!(
        TransformRecord::find(&module),
        TransformRecord::from_bytes(data)
    );
});
