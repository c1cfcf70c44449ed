//! Configuration text: whatever the file holds, `Config::from_toml` answers
//! with a config or an error, never a panic, and a config it accepts can be
//! printed with `{:?}` (which must also not panic; secrets are redacted).
//!
//! Note: `password_env` / `password_file` make the parser read an environment
//! variable or a file named by the input (relative to the current directory,
//! since the file is "fuzz.toml"). Reading arbitrary paths is harmless here.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match rtsnap::Config::from_toml(Path::new("fuzz.toml"), text) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
