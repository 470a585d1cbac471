;; The agent of examples/node.rs: it answers every number n it receives with n + 1, to the
;; agent that sent it, up to a limit; it counts what it received and every number that is not
;; the previous one plus 2 (in a ping-pong each side sees every other number), so a lost or
;; repeated message shows in `stats`.
;;
;; Exports: start(limit), tick() -> messages handled, stats() -> (received, last, out_of_order).
(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $limit (mut i32) (i32.const 1000000))
  (global $received (mut i32) (i32.const 0))
  (global $last (mut i32) (i32.const -1))
  (global $out_of_order (mut i32) (i32.const 0))
  ;; a reply the outbox had no room for (-1: none); its addressee at 80..96
  (global $pending (mut i32) (i32.const -1))
  ;; outgoing number at 16, sender id at 32..48, incoming number at 64
  (func (export "start") (param $limit i32) (global.set $limit (local.get $limit)))
  (func (export "tick") (result i32)
    (local $n i32) (local $handled i32)
    (if (i32.ge_s (global.get $pending) (i32.const 0))
      (then
        (i32.store (i32.const 16) (global.get $pending))
        (if (i32.ne (call $send (i32.const 80) (i32.const 16) (i32.const 4)) (i32.const 0))
          (then (return (i32.const 0))))
        (global.set $pending (i32.const -1))
        (local.set $handled (i32.const 1))))
    (block $done
      (loop $more
        (br_if $done (i32.ne (call $recv (i32.const 32) (i32.const 64) (i32.const 4)) (i32.const 4)))
        (local.set $handled (i32.add (local.get $handled) (i32.const 1)))
        (local.set $n (i32.load (i32.const 64)))
        (global.set $received (i32.add (global.get $received) (i32.const 1)))
        (if (i32.ge_s (global.get $last) (i32.const 0))
          (then (if (i32.ne (local.get $n) (i32.add (global.get $last) (i32.const 2)))
            (then (global.set $out_of_order (i32.add (global.get $out_of_order) (i32.const 1)))))))
        (global.set $last (local.get $n))
        (if (i32.lt_s (local.get $n) (global.get $limit))
          (then
            (i32.store (i32.const 16) (i32.add (local.get $n) (i32.const 1)))
            (if (i32.ne (call $send (i32.const 32) (i32.const 16) (i32.const 4)) (i32.const 0))
              (then
                (memory.copy (i32.const 80) (i32.const 32) (i32.const 16))
                (global.set $pending (i32.add (local.get $n) (i32.const 1)))
                (br $done)))))
        (br $more)))
    (local.get $handled))
  (func (export "stats") (result i32 i32 i32)
    (global.get $received) (global.get $last) (global.get $out_of_order)))
