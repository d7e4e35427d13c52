//! Spin's variables interface, `fermyon:spin/variables@2.0.0`, for a host that lacks it
//! (`wasmtime serve`). `get("dapr_http_port")` answers the WASI environment variable
//! `SPIN_VARIABLE_DAPR_HTTP_PORT`, as Spin's own environment provider reads it, so the same
//! settings work under both hosts. compose.sh plugs this component into the app's import for
//! wasmtime only: Spin provides the interface itself and runs the app as built.

wit_bindgen::generate!({
    // The interface as spin-sdk 5.2 imports it (its wit/deps/spin@2.0.0/variables.wit).
    inline: r#"
        package fermyon:spin@2.0.0;

        interface variables {
            get: func(name: string) -> result<string, error>;

            variant error {
                invalid-name(string),
                undefined(string),
                provider(string),
                other(string),
            }
        }

        world adapter {
            export variables;
        }
    "#,
});

use exports::fermyon::spin::variables::{Error, Guest};

struct FromEnvironment;

impl Guest for FromEnvironment {
    fn get(name: String) -> Result<String, Error> {
        // Spin's rule for variable names: lowercase letters, digits and '_', from a letter.
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::InvalidName(format!(
                "{name:?} is not a Spin variable name (a-z, 0-9, '_', from a letter)"
            )));
        }
        let key = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        match std::env::var(&key) {
            Ok(value) => Ok(value),
            Err(std::env::VarError::NotPresent) => {
                Err(Error::Undefined(format!("{key} is not in the environment")))
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::Provider(format!("{key} is not UTF-8"))),
        }
    }
}

export!(FromEnvironment);
