//! Run with `./target/release/loadtime target/release/libmessenger_adapter.so`: how long
//! loading a plugin takes in a fresh process (dlopen, abi_stable's version and layout
//! checks, the root module) and creating one adapter.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: loadtime LIBRARY"))?;
    let started = Instant::now();
    let plugin = adapter_api::load_plugin(std::path::Path::new(&path))?;
    let loaded = started.elapsed();
    println!(
        "{}: loaded in {:.2} ms",
        plugin.info.id,
        loaded.as_secs_f64() * 1000.0
    );
    Ok(())
}
