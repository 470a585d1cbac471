//! The `mielin` control socket's frames (`mielin::control`) on arbitrary bytes: the decoders
//! never panic and never allocate beyond the input; what decodes is canonical (encoding it
//! again gives the same bytes) and within every field's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mielin::control::{Reply, Request, MAX_MESSAGE, MAX_MODULE, MAX_NAME};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(&r.encode()[4..], data);
        match &r {
            Request::Deploy { name, module, .. } => {
                assert!(name.len() <= MAX_NAME && module.len() <= MAX_MODULE)
            }
            Request::Send { agent, message } => {
                assert!(agent.len() <= MAX_NAME && message.len() <= MAX_MESSAGE)
            }
            Request::Migrate { agent, to } => {
                assert!(agent.len() <= MAX_NAME && to.len() <= MAX_NAME)
            }
            Request::Status | Request::Agents => {}
        }
    }
    if let Ok(r) = Reply::decode(data) {
        assert_eq!(&r.encode()[4..], data);
    }
});
