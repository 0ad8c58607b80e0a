#![no_main]

//! MySQL binary JSON (a JSON column's binlog value) to JSON text: an error
//! or valid JSON, never a panic, a stack overflow or a hang.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = riffle_mysql::fuzzing::json(data) {
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "decoded JSON does not parse: {text}");
    }
});
