//! A shared library that is not a DmFlow plugin: the loader must refuse it cleanly.
#![allow(unsafe_code)] // `no_mangle` is an unsafe attribute

/// Something for the library to export.
#[no_mangle]
pub extern "C" fn not_a_plugin_answer() -> u32 {
    42
}
