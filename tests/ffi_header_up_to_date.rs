//! The committed C header `include/edgellm.h` is exactly what cbindgen generates from
//! `src/ffi` with `cbindgen.toml`, plus the version macros taken from Cargo.toml. Set
//! `EDGELLM_BLESS_HEADER=1` (or run `scripts/gen_header.sh`) to rewrite it after changing the API.

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("read cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define EDGELLM_VERSION_MAJOR {}\n#define EDGELLM_VERSION_MINOR {}\n#define EDGELLM_VERSION_PATCH {}\n#define EDGELLM_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn committed_header_matches_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/edgellm.h");
    let generated = generate();
    if std::env::var_os("EDGELLM_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/edgellm.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "include/edgellm.h is out of date with src/ffi (first difference at line {line}); \
             run scripts/gen_header.sh and commit the result"
        );
    }
}
