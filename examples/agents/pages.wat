;; A memory-heavy agent for pre-copy tests and the downtime bench: `grow(n)` adds pages;
;; `dirty(first, count, stride, v)` writes v at offset 8 of every `stride`-th 4 KiB chunk from
;; chunk `first`, `count` chunks in all, as a running agent dirties its heap between two
;; snapshots; `peek(addr)` reads a word back; `calls` counts the calls to `dirty` in a mutable
;; global that is not exported.
(module
  (memory 1)
  (global $calls (mut i64) (i64.const 0))
  (func (export "grow") (param $n i32) (result i32) (memory.grow (local.get $n)))
  (func (export "dirty") (param $first i32) (param $count i32) (param $stride i32) (param $v i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (i32.store
          (i32.add
            (i32.shl
              (i32.add (local.get $first) (i32.mul (local.get $i) (local.get $stride)))
              (i32.const 12))
            (i32.const 8))
          (i32.add (local.get $v) (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $calls (i64.add (global.get $calls) (i64.const 1))))
  (func (export "calls") (result i64) (global.get $calls))
  (func (export "peek") (param $addr i32) (result i32) (i32.load (local.get $addr))))
