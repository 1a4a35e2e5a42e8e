;; A wasi:http/incoming-handler@0.2 component's core module, written by hand so the
;; tests need no wasm32 toolchain. The test helper embeds the WIT world and turns it
;; into a component with wit-component. It answers by path:
;;   /echo    method, path, headers and body back
;;   /env     the environment, one K=V a line
;;   /stream  three chunks, 200 ms apart
;;   /loop    never returns
;;   /trap    traps
;;   /hog     grows memory until refused, then traps
;;   else     "hello from wasm"
(module
  (type $i (func (param i32)))
  (type $i_i (func (param i32) (result i32)))
  (type $ii (func (param i32 i32)))
  (type $ii_i (func (param i32 i32) (result i32)))
  (type $iii (func (param i32 i32 i32)))
  (type $iiii (func (param i32 i32 i32 i32)))
  (type $iIi (func (param i32 i64 i32)))
  (type $I_i (func (param i64) (result i32)))
  (type $_i (func (result i32)))
  (type $iiiiii (func (param i32 i32 i32 i32 i32 i32)))
  (type $set (func (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))

  (import "cm32p2|wasi:cli/environment@0.2" "get-environment" (func $get_environment (type $i)))
  (import "cm32p2|wasi:io/poll@0.2" "[method]pollable.block" (func $pollable_block (type $i)))
  (import "cm32p2|wasi:io/poll@0.2" "pollable_drop" (func $pollable_drop (type $i)))
  (import "cm32p2|wasi:clocks/monotonic-clock@0.2" "subscribe-duration" (func $subscribe_duration (type $I_i)))
  (import "cm32p2|wasi:io/streams@0.2" "[method]input-stream.blocking-read" (func $blocking_read (type $iIi)))
  (import "cm32p2|wasi:io/streams@0.2" "[method]output-stream.blocking-write-and-flush" (func $write_and_flush (type $iiii)))
  (import "cm32p2|wasi:io/streams@0.2" "input-stream_drop" (func $input_stream_drop (type $i)))
  (import "cm32p2|wasi:io/streams@0.2" "output-stream_drop" (func $output_stream_drop (type $i)))
  (import "cm32p2|wasi:http/types@0.2" "[constructor]fields" (func $new_fields (type $_i)))
  (import "cm32p2|wasi:http/types@0.2" "[method]fields.append" (func $fields_append (type $iiiiii)))
  (import "cm32p2|wasi:http/types@0.2" "[method]fields.entries" (func $fields_entries (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "fields_drop" (func $fields_drop (type $i)))
  (import "cm32p2|wasi:http/types@0.2" "[method]incoming-request.method" (func $request_method (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "[method]incoming-request.path-with-query" (func $request_path (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "[method]incoming-request.headers" (func $request_headers (type $i_i)))
  (import "cm32p2|wasi:http/types@0.2" "[method]incoming-request.consume" (func $request_consume (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "incoming-request_drop" (func $request_drop (type $i)))
  (import "cm32p2|wasi:http/types@0.2" "[method]incoming-body.stream" (func $body_stream (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "incoming-body_drop" (func $incoming_body_drop (type $i)))
  (import "cm32p2|wasi:http/types@0.2" "[constructor]outgoing-response" (func $new_response (type $i_i)))
  (import "cm32p2|wasi:http/types@0.2" "[method]outgoing-response.set-status-code" (func $set_status (type $ii_i)))
  (import "cm32p2|wasi:http/types@0.2" "[method]outgoing-response.body" (func $response_body (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "[method]outgoing-body.write" (func $body_write (type $ii)))
  (import "cm32p2|wasi:http/types@0.2" "[static]outgoing-body.finish" (func $body_finish (type $iiii)))
  (import "cm32p2|wasi:http/types@0.2" "[static]response-outparam.set" (func $outparam_set (type $set)))

  (memory $memory 2)
  (export "cm32p2_memory" (memory $memory))

  ;; Literals live below 1024; return areas at 1024; the bump heap starts at 4096.
  (data (i32.const 0) "hello from wasm\n")          ;; 0, 16
  (data (i32.const 16) "content-type")              ;; 16, 12
  (data (i32.const 32) "text/plain")                ;; 32, 10
  (data (i32.const 48) "/echo")                     ;; 48, 5
  (data (i32.const 56) "/env")                      ;; 56, 4
  (data (i32.const 64) "/stream")                   ;; 64, 7
  (data (i32.const 72) "/loop")                     ;; 72, 5
  (data (i32.const 80) "/trap")                     ;; 80, 5
  (data (i32.const 88) "/hog")                      ;; 88, 4
  (data (i32.const 96) " ")                         ;; 96, 1
  (data (i32.const 100) "\n")                       ;; 100, 1
  (data (i32.const 104) ": ")                       ;; 104, 2
  (data (i32.const 108) "=")                        ;; 108, 1
  (data (i32.const 112) "chunk\n")                  ;; 112, 6
  ;; Method names, 8 bytes apart, in the variant's order: get head post put delete
  ;; connect options trace patch.
  (data (i32.const 128) "GET\00\00\00\00\00HEAD\00\00\00\00POST\00\00\00\00PUT\00\00\00\00\00DELETE\00\00CONNECT\00OPTIONS\00TRACE\00\00\00PATCH\00\00\00")
  (data (i32.const 200) "\03\04\04\03\06\07\07\05\05")

  (global $heap (mut i32) (i32.const 4096))
  (global $ret i32 (i32.const 1024))

  (func $realloc (export "cm32p2_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (block $fits
      (br_if $fits (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (if (i32.eq
            (memory.grow
              (i32.add (i32.shr_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
            (i32.const -1))
        (then unreachable)))
    (if (local.get $old_size)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

  (func $initialize (export "cm32p2_initialize"))

  ;; Whether the `len` bytes at `ptr` start with the `lit_len` bytes at `lit`.
  (func $starts_with (param $ptr i32) (param $len i32) (param $lit i32) (param $lit_len i32) (result i32)
    (local $i i32)
    (if (i32.lt_u (local.get $len) (local.get $lit_len)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $lit_len)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $lit) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Writes bytes to the response stream in pieces of at most 4096 (the stream's limit).
  (func $write (param $stream i32) (param $ptr i32) (param $len i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $n (select (i32.const 4096) (local.get $len) (i32.gt_u (local.get $len) (i32.const 4096))))
        (call $write_and_flush (local.get $stream) (local.get $ptr) (local.get $n) (global.get $ret))
        (if (i32.load8_u (global.get $ret)) (then unreachable))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
        (local.set $len (i32.sub (local.get $len) (local.get $n)))
        (br $next))))

  ;; Writes each `name<sep>value\n` of a list of string pairs (16 bytes an entry).
  (func $write_pairs (param $stream i32) (param $list i32) (param $count i32) (param $sep i32) (param $sep_len i32)
    (local $entry i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        (local.set $entry (local.get $list))
        (call $write (local.get $stream) (i32.load (local.get $entry)) (i32.load offset=4 (local.get $entry)))
        (call $write (local.get $stream) (local.get $sep) (local.get $sep_len))
        (call $write (local.get $stream) (i32.load offset=8 (local.get $entry)) (i32.load offset=12 (local.get $entry)))
        (call $write (local.get $stream) (i32.const 100) (i32.const 1))
        (local.set $list (i32.add (local.get $list) (i32.const 16)))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next))))

  (func $sleep_ms (param $ms i64)
    (local $p i32)
    (local.set $p (call $subscribe_duration (i64.mul (local.get $ms) (i64.const 1000000))))
    (call $pollable_block (local.get $p))
    (call $pollable_drop (local.get $p)))

  ;; method, path, headers and body, back.
  (func $echo (param $request i32) (param $stream i32) (param $path i32) (param $path_len i32)
    (local $disc i32) (local $fields i32) (local $body i32) (local $input i32)
    (call $request_method (local.get $request) (global.get $ret))
    (local.set $disc (i32.load8_u (global.get $ret)))
    (if (i32.eq (local.get $disc) (i32.const 9))
      (then (call $write (local.get $stream) (i32.load offset=4 (global.get $ret)) (i32.load offset=8 (global.get $ret))))
      (else (call $write (local.get $stream)
              (i32.add (i32.const 128) (i32.mul (local.get $disc) (i32.const 8)))
              (i32.load8_u (i32.add (i32.const 200) (local.get $disc))))))
    (call $write (local.get $stream) (i32.const 96) (i32.const 1))
    (call $write (local.get $stream) (local.get $path) (local.get $path_len))
    (call $write (local.get $stream) (i32.const 100) (i32.const 1))
    (local.set $fields (call $request_headers (local.get $request)))
    (call $fields_entries (local.get $fields) (global.get $ret))
    (call $write_pairs (local.get $stream) (i32.load (global.get $ret)) (i32.load offset=4 (global.get $ret)) (i32.const 104) (i32.const 2))
    (call $fields_drop (local.get $fields))
    (call $write (local.get $stream) (i32.const 100) (i32.const 1))
    (call $request_consume (local.get $request) (global.get $ret))
    (if (i32.load8_u (global.get $ret)) (then unreachable))
    (local.set $body (i32.load offset=4 (global.get $ret)))
    (call $body_stream (local.get $body) (global.get $ret))
    (if (i32.load8_u (global.get $ret)) (then unreachable))
    (local.set $input (i32.load offset=4 (global.get $ret)))
    (block $closed
      (loop $more
        (call $blocking_read (local.get $input) (i64.const 4096) (global.get $ret))
        (br_if $closed (i32.load8_u (global.get $ret)))
        (call $write (local.get $stream) (i32.load offset=4 (global.get $ret)) (i32.load offset=8 (global.get $ret)))
        (br $more)))
    (call $input_stream_drop (local.get $input))
    (call $incoming_body_drop (local.get $body)))

  (func $handle (export "cm32p2|wasi:http/incoming-handler@0.2|handle") (param $request i32) (param $outparam i32)
    (local $path i32) (local $path_len i32) (local $headers i32) (local $response i32)
    (local $body i32) (local $stream i32)
    (call $request_path (local.get $request) (global.get $ret))
    (if (i32.load8_u (global.get $ret))
      (then
        (local.set $path (i32.load offset=4 (global.get $ret)))
        (local.set $path_len (i32.load offset=8 (global.get $ret)))))
    (if (call $starts_with (local.get $path) (local.get $path_len) (i32.const 72) (i32.const 5))
      (then (loop $forever (br $forever))))
    (if (call $starts_with (local.get $path) (local.get $path_len) (i32.const 80) (i32.const 5))
      (then unreachable))
    (if (call $starts_with (local.get $path) (local.get $path_len) (i32.const 88) (i32.const 4))
      (then
        (loop $grow
          (br_if $grow (i32.ne (memory.grow (i32.const 256)) (i32.const -1))))
        unreachable))

    (local.set $headers (call $new_fields))
    (call $fields_append (local.get $headers) (i32.const 16) (i32.const 12) (i32.const 32) (i32.const 10) (global.get $ret))
    (local.set $response (call $new_response (local.get $headers)))
    (drop (call $set_status (local.get $response) (i32.const 200)))
    (call $response_body (local.get $response) (global.get $ret))
    (local.set $body (i32.load offset=4 (global.get $ret)))
    (call $body_write (local.get $body) (global.get $ret))
    (local.set $stream (i32.load offset=4 (global.get $ret)))
    ;; result<outgoing-response, error-code>, flattened: ok (0) and the response, then
    ;; the error-code payload's slots unused.
    (call $outparam_set (local.get $outparam) (i32.const 0) (local.get $response)
      (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))

    (block $answered
      (if (call $starts_with (local.get $path) (local.get $path_len) (i32.const 48) (i32.const 5))
        (then
          (call $echo (local.get $request) (local.get $stream) (local.get $path) (local.get $path_len))
          (br $answered)))
      (if (call $starts_with (local.get $path) (local.get $path_len) (i32.const 56) (i32.const 4))
        (then
          (call $get_environment (global.get $ret))
          (call $write_pairs (local.get $stream) (i32.load (global.get $ret)) (i32.load offset=4 (global.get $ret)) (i32.const 108) (i32.const 1))
          (br $answered)))
      (if (call $starts_with (local.get $path) (local.get $path_len) (i32.const 64) (i32.const 7))
        (then
          (call $write (local.get $stream) (i32.const 112) (i32.const 6))
          (call $sleep_ms (i64.const 200))
          (call $write (local.get $stream) (i32.const 112) (i32.const 6))
          (call $sleep_ms (i64.const 200))
          (call $write (local.get $stream) (i32.const 112) (i32.const 6))
          (br $answered)))
      (call $write (local.get $stream) (i32.const 0) (i32.const 16)))

    (call $output_stream_drop (local.get $stream))
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (global.get $ret)))

  (func $handle_post (export "cm32p2|wasi:http/incoming-handler@0.2|handle_post"))
)
