//! The WebAssembly component the tests and benchmarks deploy: `handler.wat`, a
//! `wasi:http/incoming-handler@0.2` core module written by hand, turned into a
//! component with wit-component. No wasm32 toolchain is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The world the component implements: the handler Spin and `wasmtime serve` run,
/// plus the environment (for `/env`) and the monotonic clock (for `/stream`).
const HANDLER_WORLD: &str = r#"
package updraft:test;

world handler {
  import wasi:cli/environment@0.2.12;
  import wasi:clocks/monotonic-clock@0.2.12;
  export wasi:http/incoming-handler@0.2.12;
}
"#;

const HANDLER_WAT: &str = include_str!("../handler.wat");

/// The WIT files that ship inside the `wasmtime-wasi-http` crate, found through
/// `cargo metadata`.
fn wasi_http_wit() -> Result<PathBuf, String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "wasmtime-wasi-http")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("wasmtime-wasi-http is not in the dependency graph")?;
    Ok(Path::new(manifest).parent().ok_or("manifest path")?.join("wit"))
}

/// The component's bytes.
pub fn handler_component() -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::new();
    resolve.push_dir(wasi_http_wit()?).map_err(|e| format!("{e:#}"))?;
    let package = resolve
        .push_str("handler.wit", HANDLER_WORLD)
        .map_err(|e| format!("{e:#}"))?;
    let world = resolve
        .select_world(&[package], Some("handler"))
        .map_err(|e| format!("{e:#}"))?;
    let mut module = wat::parse_str(HANDLER_WAT).map_err(|e| e.to_string())?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
        .map_err(|e| format!("{e:#}"))?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("encoding the component: {e:#}"))
}

/// Writes the component to `dir/handler.wasm` and returns its path.
pub fn write_handler_component(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("handler.wasm");
    std::fs::write(&path, handler_component()?).map_err(|e| e.to_string())?;
    Ok(path)
}
