;; A counter agent with a stack-pointer global, as Rust and C modules have.
;;
;; `step(x)` pushes x onto a stack in linear memory below the stack pointer `$sp` (a mutable
;; global that is not exported), counts x in a 64-bin histogram at the bottom of memory, and
;; adds x to a running total kept in another unexported global. `digest()` folds the total,
;; the stack (from `$sp` up) and the histogram into one number, so it changes if memory, the
;; stack pointer or the total is lost or altered in a migration.
(module
  (memory 1)
  (global $sp (mut i32) (i32.const 65536))
  (global $total (mut i64) (i64.const 0))
  (global $steps (mut i32) (i32.const 0))

  (func (export "step") (param $x i32) (result i64)
    (local $bin i32)
    (global.set $sp (i32.sub (global.get $sp) (i32.const 4)))
    (i32.store (global.get $sp) (local.get $x))
    (local.set $bin (i32.shl (i32.and (local.get $x) (i32.const 63)) (i32.const 2)))
    (i32.store (local.get $bin) (i32.add (i32.load (local.get $bin)) (i32.const 1)))
    (global.set $total (i64.add (global.get $total) (i64.extend_i32_u (local.get $x))))
    (global.set $steps (i32.add (global.get $steps) (i32.const 1)))
    (global.get $total))

  (func (export "steps") (result i32) (global.get $steps))
  (func (export "total") (result i64) (global.get $total))

  (func (export "digest") (result i64)
    (local $p i32) (local $h i64)
    (local.set $h (global.get $total))
    (local.set $p (global.get $sp))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (i32.const 65536)))
        (local.set $h (i64.add (i64.mul (local.get $h) (i64.const 31))
                               (i64.load32_u (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))
    (local.set $p (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (i32.const 256)))
        (local.set $h (i64.add (i64.mul (local.get $h) (i64.const 17))
                               (i64.load32_u (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))
    (local.get $h)))
