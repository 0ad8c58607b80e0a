#![no_main]

//! A table map and a rows event (bytes as a MySQL/MariaDB server sends
//! them) through riffle's row decoding: any input must give rows or an
//! error, never a panic or a hang.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = riffle_mysql::fuzzing::rows_event(data);
});
