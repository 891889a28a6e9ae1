;; A C-like WASI command that uses Kigumi's host module (docs/wasm-abi.md):
;; it reads config.txt from its state (the preopen at /, fd 3), prints it,
;; drops the mount at /, and tries to open the file again. That fails with
;; EPERM (63), which it reports and exits with.
;;
;; Build it with wat2wasm (Debian's wabt): wat2wasm drop.wat -o drop.wasm
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; drop_mount(path, path_len) -> errno
  (import "kigumi" "drop_mount" (func $drop_mount (param i32 i32) (result i32)))

  (memory (export "memory") 1)
  ;; 0: an iovec; 8: bytes read or written; 12: the opened fd
  (data (i32.const 16) "config.txt")
  (data (i32.const 32) "/")
  (data (i32.const 64) "dropped /\n")
  (data (i32.const 80) "config unreadable after the drop\n")

  ;; print writes len bytes at ptr to stdout.
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; open opens config.txt in the preopen at / (fd 3) and returns the errno.
  (func $open (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 10)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))

  (func (export "_start")
    (local $errno i32)
    (if (call $open) (then (call $proc_exit (i32.const 1))))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 256))
    (if (call $fd_read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 2))))
    (call $print (i32.const 1024) (i32.load (i32.const 8)))
    (if (call $drop_mount (i32.const 32) (i32.const 1)) (then (call $proc_exit (i32.const 3))))
    (call $print (i32.const 64) (i32.const 10))
    (local.set $errno (call $open))
    (if (local.get $errno) (then (call $print (i32.const 80) (i32.const 33))))
    (call $proc_exit (local.get $errno))))
