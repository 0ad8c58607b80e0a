#![no_main]

//! GTID positions (MariaDB and MySQL forms): parsing, updating, reading
//! back and comparing offsets by them.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let _ = riffle_mysql::fuzzing::gtid(&text, form & 1 == 1);
});
