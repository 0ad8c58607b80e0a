#![no_main]

//! A snapshot row as the server's text protocol sends it (length-encoded
//! values, 0xFB for NULL) to riffle's values: a row or an error, never a
//! panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = riffle_mysql::fuzzing::text_row(data);
});
