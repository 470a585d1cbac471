;; A stream of messages for benches: `start(arg)` with a non-zero low byte makes the agent a
;; sender to the agent whose 16-byte id is that byte repeated; bits 16 to 28 of `arg` give the
;; length of its messages in bytes (0: 256; at most 4,096, the mesh's longest). `tick()` takes
;; every message waiting (counting them), then, as a sender, queues messages until the outbox
;; is full, and returns how many it took and queued (0: nothing changed). With bit 8 of `arg`
;; set the agent sends only when asked: `send1()` queues one message and returns 1 (0 when the
;; outbox is full). `stats()` returns (received, sent, 0).
(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $received (mut i32) (i32.const 0))
  (global $sent (mut i32) (i32.const 0))
  (global $sender (mut i32) (i32.const 0))
  (global $len (mut i32) (i32.const 256))
  (func (export "start") (param $arg i32)
    (if (i32.ne (i32.and (local.get $arg) (i32.const 0xff)) (i32.const 0))
      (then
        (memory.fill (i32.const 0) (local.get $arg) (i32.const 16))
        (if (i32.ne (i32.shr_u (local.get $arg) (i32.const 16)) (i32.const 0))
          (then (global.set $len (i32.shr_u (local.get $arg) (i32.const 16)))))
        (global.set $sender (i32.eqz (i32.and (local.get $arg) (i32.const 0x100)))))))
  (func (export "send1") (result i32)
    (i32.store (i32.const 512) (global.get $sent))
    (if (result i32) (i32.eqz (call $send (i32.const 0) (i32.const 512) (global.get $len)))
      (then
        (global.set $sent (i32.add (global.get $sent) (i32.const 1)))
        (i32.const 1))
      (else (i32.const 0))))
  (func (export "tick") (result i32) (local $n i32)
    (block $empty (loop $take
      (br_if $empty (i32.lt_s (call $recv (i32.const 32) (i32.const 8192) (i32.const 4096)) (i32.const 0)))
      (global.set $received (i32.add (global.get $received) (i32.const 1)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $take)))
    (if (global.get $sender)
      (then
        (block $full (loop $put
          (i32.store (i32.const 512) (global.get $sent))
          (br_if $full (i32.ne (call $send (i32.const 0) (i32.const 512) (global.get $len)) (i32.const 0)))
          (global.set $sent (i32.add (global.get $sent) (i32.const 1)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $put)))))
    (local.get $n))
  (func (export "stats") (result i32 i32 i32) (global.get $received) (global.get $sent) (i32.const 0)))
