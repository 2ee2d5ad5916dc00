//! The `edgellm` command-line tool.
fn main() {
    eprintln!("edgellm: not built yet");
    std::process::exit(2);
}
