;; A large agent for the hand-off tests: `start(n)` asks for n bytes of memory (at most its
;; 10 MiB) filled with xorshift bytes, which do not compress; each `tick` fills 256 KiB more
;; (within one call's fuel) and says 1 while it fills; `stats` answers (bytes filled, 0, 0),
;; the shape of echo.wat's, so `mielin node`'s `stats` shows it.
(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 160)
  (global $want (mut i32) (i32.const 0))
  (global $i (mut i32) (i32.const 0))
  (global $x (mut i32) (i32.const 0x9e3779b9))
  (func (export "start") (param $n i32)
    (global.set $want
      (select (local.get $n) (i32.const 10485760) (i32.le_u (local.get $n) (i32.const 10485760)))))
  (func (export "tick") (result i32)
    (local $end i32)
    (if (i32.ge_u (global.get $i) (global.get $want)) (then (return (i32.const 0))))
    (local.set $end (i32.add (global.get $i) (i32.const 262144)))
    (block $done (loop $more
      (br_if $done (i32.ge_u (global.get $i) (local.get $end)))
      (br_if $done (i32.ge_u (global.get $i) (global.get $want)))
      (global.set $x (i32.xor (global.get $x) (i32.shl (global.get $x) (i32.const 13))))
      (global.set $x (i32.xor (global.get $x) (i32.shr_u (global.get $x) (i32.const 17))))
      (global.set $x (i32.xor (global.get $x) (i32.shl (global.get $x) (i32.const 5))))
      (i32.store (global.get $i) (global.get $x))
      (global.set $i (i32.add (global.get $i) (i32.const 4)))
      (br $more)))
    (i32.const 1))
  (func (export "stats") (result i32 i32 i32) (global.get $i) (i32.const 0) (i32.const 0)))
