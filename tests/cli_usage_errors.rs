//! The `edgellm` binary's error contract: usage mistakes exit 2 with the usage text, failures
//! (such as a model path that does not exist) exit 1 with a single `error: <message>` line.

use std::process::{Command, Output};

fn edgellm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(args)
        .output()
        .expect("run edgellm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_usage_error(args: &[&str], needle: &str) {
    let o = edgellm(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains("usage: edgellm"),
        "{args:?} should print usage: {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?} should mention {needle:?}: {err}"
    );
    assert!(o.stdout.is_empty(), "{args:?} wrote to stdout");
}

#[test]
fn no_arguments_prints_usage() {
    let o = edgellm(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("usage: edgellm"));
}

#[test]
fn help_goes_to_stdout_and_succeeds() {
    let o = edgellm(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in [
        "generate",
        "tokenize",
        "detokenize",
        "logits",
        "perplexity",
        "info",
        "bench",
    ] {
        assert!(out.contains(cmd), "usage lacks {cmd}");
    }
}

#[test]
fn malformed_command_lines_are_usage_errors() {
    assert_usage_error(&["frobnicate"], "unknown command");
    assert_usage_error(
        &["generate", "--model", "m.gguf", "--prompt", "hi", "--bogus"],
        "unknown option --bogus",
    );
    assert_usage_error(&["generate", "--prompt", "hi"], "--model is required");
    assert_usage_error(&["generate", "--model", "m.gguf"], "exactly one of");
    assert_usage_error(
        &[
            "generate",
            "--model",
            "m.gguf",
            "--prompt",
            "a",
            "--prompt-file",
            "b",
        ],
        "exactly one of",
    );
    assert_usage_error(
        &[
            "generate",
            "--model",
            "m.gguf",
            "--prompt",
            "hi",
            "--max-tokens",
            "lots",
        ],
        "--max-tokens",
    );
    assert_usage_error(
        &[
            "generate", "--model", "m.gguf", "--prompt", "hi", "--top-p", "1.5",
        ],
        "--top-p",
    );
    assert_usage_error(
        &[
            "generate", "--model", "m.gguf", "--prompt", "hi", "--raw", "--system", "s",
        ],
        "--system",
    );
    assert_usage_error(
        &["generate", "--model", "m.gguf", "--prompt"],
        "--prompt needs a value",
    );
    assert_usage_error(&["tokenize", "--model", "m.gguf"], "TEXT");
    assert_usage_error(
        &["detokenize", "--model", "m.gguf", "12", "x"],
        "not a token id",
    );
    assert_usage_error(&["logits", "--model", "m.gguf"], "--ids");
    assert_usage_error(&["perplexity", "--model", "m.gguf"], "--file is required");
    assert_usage_error(
        &["bench", "--model", "m.gguf", "--reps", "0"],
        "must be positive",
    );
    assert_usage_error(
        &["info", "--model", "m.gguf", "--backend", "tpu"],
        "--backend",
    );
}

#[test]
fn missing_model_file_is_an_error_naming_the_path() {
    let dir = std::env::temp_dir().join(format!("edgellm-cli-missing-{}", std::process::id()));
    let missing = dir.join("no-such-model.gguf");
    let path = missing.to_str().expect("utf-8 temp path");
    for args in [
        vec!["generate", "--model", path, "--prompt", "hi"],
        vec!["info", "--model", path],
        vec!["tokenize", "--model", path, "hello"],
        vec!["logits", "--model", path, "--ids", "1,2"],
    ] {
        let o = edgellm(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            err.contains("no-such-model.gguf"),
            "error should name the file: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line, no usage text: {err}");
    }
}

#[test]
fn missing_text_file_is_an_error_naming_the_path() {
    let o = edgellm(&[
        "perplexity",
        "--model",
        "m.gguf",
        "--file",
        "/nonexistent/edgellm-ppl.txt",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("edgellm-ppl.txt"),
        "{err}"
    );
}

#[test]
fn malformed_model_file_is_an_error_not_a_crash() {
    let dir = std::env::temp_dir().join(format!("edgellm-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("garbage.gguf");
    std::fs::write(&bad, b"this is not a gguf file at all").unwrap();
    let o = edgellm(&["info", "--model", bad.to_str().unwrap()]);
    let err = stderr(&o);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
}
