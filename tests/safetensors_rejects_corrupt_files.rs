//! Truncated, bit-flipped and hand-corrupted safetensors files give errors, never panics or
//! out-of-range views. The starting point is the reference-written fixture
//! `tests/fixtures/safetensors/single/model.safetensors`.

use std::path::{Path, PathBuf};

use edgellm::loader::safetensors::{parse_header, SafetensorsModel, MAX_HEADER_BYTES};
use edgellm::Error;

fn reference_bytes() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/safetensors/single/model.safetensors"),
    )
    .unwrap()
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

fn image(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data_len, 0x3c);
    v
}

fn expect_format_error(bytes: Vec<u8>, what: &str) {
    match SafetensorsModel::from_bytes("corrupt.safetensors", bytes) {
        Err(Error::ModelFormat { file, .. }) => assert_eq!(file, "corrupt.safetensors", "{what}"),
        Err(e) => panic!("{what}: expected a format error, got {e:?}"),
        Ok(_) => panic!("{what}: corrupt file accepted"),
    }
}

#[test]
fn the_untouched_file_loads() {
    let m = SafetensorsModel::from_bytes("ok.safetensors", reference_bytes()).unwrap();
    assert_eq!(m.weights.len(), 10);
}

/// The reference writer leaves no slack: every byte belongs to the header or to a tensor, so
/// every truncation must be refused.
#[test]
fn every_truncation_is_an_error() {
    let bytes = reference_bytes();
    for cut in 0..bytes.len() {
        expect_format_error(bytes[..cut].to_vec(), &format!("truncated to {cut} bytes"));
    }
}

/// Flipping any header byte either yields an error or a file whose every view still lies inside
/// it (a flip inside a tensor name, say, makes a different but valid file). Flipping a data byte
/// must change exactly that tensor's bytes and nothing else.
#[test]
fn flipped_bytes_never_escape_the_file() {
    let bytes = reference_bytes();
    let data_start = 8 + header_len(&bytes);
    let mut rejected = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x08, 0x20, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let len = b.len();
            match SafetensorsModel::from_bytes("flip.safetensors", b) {
                Err(_) => {
                    assert!(i < data_start, "flipping data byte {i} was rejected");
                    rejected += 1;
                }
                Ok(m) => {
                    let total: usize = m.weights.iter().map(|t| t.bytes().len()).sum();
                    assert!(total <= len);
                }
            }
        }
    }
    // Most header flips break the JSON or a number; a reader that ignored the header would
    // reject none of them.
    assert!(
        rejected > data_start * 5 / 2,
        "only {rejected} of {} header flips rejected",
        data_start * 5
    );
}

#[test]
fn header_length_is_bounded() {
    let bytes = reference_bytes();
    let real = header_len(&bytes) as u64;
    for bad in [
        u64::MAX,
        MAX_HEADER_BYTES + 1,
        (bytes.len() - 8) as u64 + 1,
        1 << 40,
        real + 1,
    ] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&bad.to_le_bytes());
        expect_format_error(b, &format!("header length {bad}"));
    }
    // Shorter than the JSON: the object no longer closes.
    for shorter in [0, 1, real / 2, real - 1] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&shorter.to_le_bytes());
        expect_format_error(b, &format!("header length {shorter}"));
    }
}

#[test]
fn hand_made_corruptions_are_errors() {
    let t = |body: &str| format!("{{\"t\":{body}}}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "offsets past end",
            image(
                &t(r#"{"dtype":"F32","shape":[4],"data_offsets":[0,16]}"#),
                8,
            ),
        ),
        (
            "begin past end",
            image(&t(r#"{"dtype":"F32","shape":[0],"data_offsets":[9,9]}"#), 8),
        ),
        (
            "begin after end",
            image(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[8,4]}"#), 8),
        ),
        (
            "huge offsets",
            image(
                &t(
                    r#"{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}"#,
                ),
                8,
            ),
        ),
        (
            "offset beyond u64",
            image(
                &t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999999]}"#),
                8,
            ),
        ),
        (
            "negative offset",
            image(
                &t(r#"{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}"#),
                8,
            ),
        ),
        (
            "float offset",
            image(
                &t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0.0,4.0]}"#),
                8,
            ),
        ),
        (
            "three offsets",
            image(
                &t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#),
                8,
            ),
        ),
        (
            "one offset",
            image(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[4]}"#), 8),
        ),
        (
            "size mismatch",
            image(&t(r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#), 8),
        ),
        (
            "f16 size mismatch",
            image(
                &t(r#"{"dtype":"F16","shape":[2,3],"data_offsets":[0,8]}"#),
                8,
            ),
        ),
        (
            "shape overflow",
            image(
                &t(r#"{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}"#),
                8,
            ),
        ),
        (
            "negative dim",
            image(
                &t(r#"{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}"#),
                8,
            ),
        ),
        (
            "missing dtype",
            image(&t(r#"{"shape":[2],"data_offsets":[0,8]}"#), 8),
        ),
        (
            "missing shape",
            image(&t(r#"{"dtype":"F32","data_offsets":[0,8]}"#), 8),
        ),
        (
            "missing offsets",
            image(&t(r#"{"dtype":"F32","shape":[2]}"#), 8),
        ),
        (
            "dtype not a string",
            image(&t(r#"{"dtype":7,"shape":[2],"data_offsets":[0,8]}"#), 8),
        ),
        (
            "unknown dtype",
            image(&t(r#"{"dtype":"F33","shape":[2],"data_offsets":[0,8]}"#), 8),
        ),
        ("entry not an object", image(&t("[1,2]"), 8)),
        ("root not an object", image("[]", 0)),
        ("not json", image("{\"t\":", 8)),
        ("trailing garbage", image("{}x", 0)),
        (
            "metadata not strings",
            image(r#"{"__metadata__":{"a":1}}"#, 0),
        ),
        (
            "metadata not an object",
            image(r#"{"__metadata__":"pt"}"#, 0),
        ),
        (
            "overlap",
            image(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}}"#,
                10,
            ),
        ),
        (
            "identical ranges",
            image(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "empty tensor inside another",
            image(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#,
                8,
            ),
        ),
        (
            "gap between tensors",
            image(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[6,10]}}"#,
                10,
            ),
        ),
        (
            "gap before first tensor",
            image(&t(r#"{"dtype":"F16","shape":[1],"data_offsets":[2,4]}"#), 4),
        ),
        (
            "unused tail",
            image(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#), 5),
        ),
        ("no tensors but data", image("{}", 1)),
        ("invalid utf-8", {
            let mut v = image(
                "{\"\u{e9}\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                0,
            );
            v[10] = 0xff;
            v
        }),
        ("file shorter than the length prefix", vec![1, 0, 0]),
    ];
    for (what, bytes) in cases {
        expect_format_error(bytes, what);
    }
    // Sanity check of the helper: the same shapes with consistent offsets are accepted.
    let ok = image(
        r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},"c":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}  "#,
        10,
    );
    let h = parse_header(Path::new("ok"), &ok).unwrap();
    assert_eq!(h.tensors.len(), 3);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("safetensors_corrupt")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_index(dir: &Path, json: &str) {
    std::fs::write(dir.join("model.safetensors.index.json"), json).unwrap();
}

#[test]
fn bad_indexes_are_errors() {
    let shard = image(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        4,
    );

    let dir = scratch_dir("missing_tensor");
    std::fs::write(dir.join("s1.safetensors"), &shard).unwrap();
    write_index(
        &dir,
        r#"{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}}"#,
    );
    let e = SafetensorsModel::open_dir(&dir)
        .err()
        .expect("missing tensor accepted");
    assert!(e.to_string().contains("missing tensor b"), "{e}");

    let dir = scratch_dir("wrong_shard");
    std::fs::write(dir.join("s1.safetensors"), &shard).unwrap();
    std::fs::write(dir.join("s2.safetensors"), image("{}", 0)).unwrap();
    write_index(
        &dir,
        r#"{"weight_map":{"a":"s2.safetensors","x":"s1.safetensors"}}"#,
    );
    assert!(SafetensorsModel::open_dir(&dir).is_err());

    let dir = scratch_dir("duplicate");
    std::fs::write(dir.join("s1.safetensors"), &shard).unwrap();
    std::fs::write(dir.join("s2.safetensors"), &shard).unwrap();
    write_index(
        &dir,
        r#"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#,
    );
    let e = SafetensorsModel::open_dir(&dir)
        .err()
        .expect("duplicate accepted");
    assert!(e.to_string().contains("duplicate tensor a"), "{e}");

    let dir = scratch_dir("absent_shard");
    write_index(&dir, r#"{"weight_map":{"a":"nope.safetensors"}}"#);
    assert!(matches!(
        SafetensorsModel::open_dir(&dir),
        Err(Error::Io { .. })
    ));

    let dir = scratch_dir("escape");
    write_index(&dir, r#"{"weight_map":{"a":"../s1.safetensors"}}"#);
    assert!(matches!(
        SafetensorsModel::open_dir(&dir),
        Err(Error::ModelFormat { .. })
    ));

    for (name, json) in [
        ("no_map", r#"{"metadata":{}}"#),
        ("empty_map", r#"{"weight_map":{}}"#),
        ("map_value_not_string", r#"{"weight_map":{"a":3}}"#),
        ("not_json", r#"{"weight_map":"#),
    ] {
        let dir = scratch_dir(name);
        write_index(&dir, json);
        assert!(
            matches!(
                SafetensorsModel::open_dir(&dir),
                Err(Error::ModelFormat { .. })
            ),
            "{name}"
        );
    }
}
