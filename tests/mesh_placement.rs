//! Placement: required imports read from DNA, and a selection that refuses nodes lacking one.

use mielin_cells::mesh::placement::{self, Announce, HostFn, Refusal};
use mielin_cells::mesh::MeshError;
use mielin_cells::{Arch, NodeId, NodeStatus, Policy, PolicyViolation};
use proptest::prelude::*;

fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "env" "memory" (memory 1))
            (import "mesh" "send" (func (param i32 i32)))
            (import "env" "limit" (global i32))
            (import "env" "table" (table 2 funcref))
            (import "mesh" "recv" (func (result i32)))
            (func (export "run")))"#,
    )
    .unwrap()
}

const SEND: HostFn<'static> = HostFn {
    module: "mesh",
    name: "send",
};
const RECV: HostFn<'static> = HostFn {
    module: "mesh",
    name: "recv",
};

fn status(battery_percent: u8, latency_ms: u32, arch: Arch) -> NodeStatus {
    NodeStatus {
        battery_percent,
        latency_ms,
        arch,
    }
}

#[test]
fn function_imports_in_order() {
    let wasm = module();
    let mut seen = Vec::new();
    assert_eq!(placement::imports(&wasm, |f| seen.push(f)), Ok(2));
    assert_eq!(seen, [SEND, RECV]);
    // No import section: none needed.
    assert_eq!(placement::imports(b"\0asm\x01\0\0\0", |_| panic!()), Ok(0));
}

#[test]
fn selection_refuses_a_node_lacking_an_import_and_names_it() {
    let wasm = module();
    let all = [SEND, RECV];
    let only_send = [SEND];
    let nodes = [
        Announce {
            node: NodeId::from_bytes([1; 16]),
            status: status(90, 5, Arch::X86_64),
            host_functions: &only_send,
        },
        Announce {
            node: NodeId::from_bytes([2; 16]),
            status: status(10, 5, Arch::X86_64),
            host_functions: &all,
        },
        Announce {
            node: NodeId::from_bytes([3; 16]),
            status: status(80, 40, Arch::Arm),
            host_functions: &all,
        },
        Announce {
            node: NodeId::from_bytes([4; 16]),
            status: status(80, 20, Arch::Arm),
            host_functions: &all,
        },
    ];
    let policy = Policy::new(30, 100, &[]).unwrap();
    let mut refused = Vec::new();
    let chosen = placement::select(&policy, &wasm, &nodes, |i, r| refused.push((i, r))).unwrap();
    // Node 0 is the fastest but lacks mesh.recv; node 1 has too little battery; 3 beats 2.
    assert_eq!(chosen, Some(3));
    assert_eq!(
        refused,
        [
            (0, Refusal::MissingImport(RECV)),
            (
                1,
                Refusal::Policy(PolicyViolation::BatteryTooLow {
                    required: 30,
                    found: 10
                })
            ),
        ]
    );
    // Nobody provides anything: no node, each refusal names mesh.send.
    let bare: Vec<Announce<'_>> = nodes
        .iter()
        .map(|n| Announce {
            host_functions: &[],
            ..*n
        })
        .collect();
    let mut names = Vec::new();
    assert_eq!(
        placement::select(&policy, &wasm, &bare, |_, r| names.push(r)),
        Ok(None)
    );
    assert!(names.iter().all(|r| *r == Refusal::MissingImport(SEND)));
    // The architecture preference still ranks among the nodes that fit.
    let policy = Policy::new(0, u32::MAX, &[Arch::Arm]).unwrap();
    assert_eq!(
        placement::select(&policy, &wasm, &nodes, |_, _| {}),
        Ok(Some(3))
    );
}

#[test]
fn malformed_modules_are_errors() {
    let wasm = module();
    for n in 0..wasm.len() {
        // A prefix ends inside a section: an error, never a panic. (A prefix that ends exactly
        // at a section boundary is a valid, shorter module.)
        let _ = placement::imports(&wasm[..n], |_| {});
    }
    assert_eq!(
        placement::imports(b"\0asm\x02\0\0\0", |_| {}),
        Err(MeshError::BadModule)
    );
    // An import section claiming more imports than the limit.
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[2, 4, 0xff, 0xff, 0x03, 0]);
    assert_eq!(placement::imports(&m, |_| {}), Err(MeshError::BadModule));
    // A section size past the end.
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[2, 100, 1]);
    assert_eq!(placement::imports(&m, |_| {}), Err(MeshError::BadModule));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 512 }))]

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&tail);
        let _ = placement::imports(&m, |_| {});
        let _ = placement::imports(&tail, |_| {});
    }

    #[test]
    fn mutated_module_never_panics(pos in any::<usize>(), val in any::<u8>()) {
        let mut m = module();
        let p = pos % m.len();
        m[p] = val;
        let _ = placement::imports(&m, |_| {});
    }
}
