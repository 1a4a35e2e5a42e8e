//! The WebAssembly component the tests and benchmarks deploy: `handler.wat`, a
//! `wasi:http/incoming-handler@0.2` core module written by hand, turned into a
//! component with wit-component. No wasm32 toolchain is needed.

use std::path::{Path, PathBuf};

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

/// The WASI 0.2 packages the world uses, vendored from `wasmtime-wasi-http` 48 (its
/// `wit/deps`, Apache-2.0 WITH LLVM-exception) so that building the component needs
/// no cargo metadata and no sources of other crates. Listed so each package comes after
/// the packages it uses.
const WASI_PACKAGES: &[(&str, &str)] = &[
    ("io.wit", include_str!("../wit/deps/io.wit")),
    ("clocks.wit", include_str!("../wit/deps/clocks.wit")),
    ("random.wit", include_str!("../wit/deps/random.wit")),
    ("filesystem.wit", include_str!("../wit/deps/filesystem.wit")),
    ("sockets.wit", include_str!("../wit/deps/sockets.wit")),
    ("cli.wit", include_str!("../wit/deps/cli.wit")),
    ("http.wit", include_str!("../wit/deps/http.wit")),
];

/// The component's bytes.
pub fn handler_component() -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::new();
    for (name, text) in WASI_PACKAGES {
        resolve.push_str(name, text).map_err(|e| format!("{name}: {e:#}"))?;
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_handler_builds_from_the_vendored_wit_alone() {
        let bytes = super::handler_component().unwrap();
        // A component's preamble: the magic, then layer 1 (a module would have 0).
        assert_eq!(&bytes[..4], b"\0asm");
        assert_eq!(&bytes[6..8], &[1, 0], "a component, not a core module");
    }
}
