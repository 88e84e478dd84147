//! Any text as the host's config file: a config or an error naming the file, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let result = host_example::config::Config::parse(text, "fuzz.toml", std::path::Path::new("/tmp"), |name| {
        (name.len() % 2 == 0).then(|| format!("value-of-{name}"))
    });
    if let Err(err) = result {
        assert!(err.to_string().starts_with("fuzz.toml"));
    }
});
