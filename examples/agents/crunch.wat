;; A CPU-bound agent for mid-call capture: `tick` runs 1,000 outer iterations of 1,000
;; xorshift steps (10^6 steps), with a yield point (`mesh.yield`) at the head of the outer loop,
;; then publishes the result in the global `result` and sets `done`. The state of the loop
;; lives in locals only: it survives a move in the middle only if the suspended frame does.
;; Runs only after the deploy-time transform (`mielin transform crunch.wat -o crunch.async.wasm
;; --unwind mesh.yield`); a node preempts it at the yield point when its call's fuel runs low
;; (`mesh::wasm::link_blocking`), and each tick continues it. `tick` returns 1 when it
;; finishes, then 0.
(module
  (import "mesh" "yield" (func $yield))
  (memory 1)
  (global $result (export "result") (mut i64) (i64.const 0))
  (global $done (export "done") (mut i32) (i32.const 0))
  (func (export "tick") (result i32)
    (local $x i64) (local $i i32) (local $j i32)
    (if (global.get $done) (then (return (i32.const 0))))
    (local.set $x (i64.const 0x1234567887654321))
    (block $out
      (loop $outer
        (br_if $out (i32.ge_u (local.get $i) (i32.const 1000)))
        (call $yield)
        (local.set $j (i32.const 0))
        (loop $inner
          (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
          (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
          (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $inner (i32.lt_u (local.get $j) (i32.const 1000))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (global.set $result (local.get $x))
    (global.set $done (i32.const 1))
    (i32.const 1)))
