//! Tokenizer and chat-template behaviour that needs no fetched model: a committed tiny Hugging Face
//! tokenizer directory and libedgellm's built-in chat styles, both checked against transformers
//! (goldens from tests/fixtures/gen_tokenizer_golden.py), plus refusal of bad input.

mod common;

use std::path::PathBuf;

use edgellm::runtime::Message;
use edgellm::vocab::{ChatTemplate, TokenSpelling, Vocab};
use edgellm::Error;
use serde_json::Value;

fn golden(name: &str) -> Value {
    let p = common::fixtures().join("tokenizer").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn tiny_dir() -> PathBuf {
    common::fixtures().join("tokenizer/tiny_hf")
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

/// A scratch directory holding a copy of the tiny tokenizer, with `edit` applied to its files.
fn scratch_dir(name: &str, edit: impl FnOnce(&std::path::Path)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgellm-vocab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(tiny_dir()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    edit(&dir);
    dir
}

/// Every golden string and chat of `golden_name` against the tokenizer directory `dir`.
fn check_dir_against_golden(dir: &std::path::Path, golden_name: &str) -> Vocab {
    let doc = golden(golden_name);
    let vocab = Vocab::from_hf_dir(dir).unwrap();
    assert_eq!(
        vocab.n_tokens(),
        doc["vocab_size"].as_u64().unwrap() as usize
    );
    assert_eq!(
        vocab.bos_id(),
        Some(doc["bos_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        vocab.eos_ids()[0],
        doc["eos_token_id"].as_u64().unwrap() as u32
    );
    for s in doc["strings"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        let want = common::json_ids(&s["ids"]);
        let with_special = common::json_ids(&s["ids_with_special"]);
        assert_eq!(vocab.encode(text, false).unwrap(), want, "ids of {text:?}");
        assert_eq!(
            vocab.encode(text, true).unwrap(),
            with_special,
            "ids+special of {text:?}"
        );
        assert_eq!(
            vocab.decode(&want, false).unwrap(),
            s["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
        assert_eq!(
            vocab.decode(&with_special, true).unwrap(),
            s["decoded_skip_special"].as_str().unwrap()
        );
        // Raw token bytes add up to the text (none of these strings contains special-token text).
        let bytes: Vec<u8> = want
            .iter()
            .flat_map(|&id| vocab.token_bytes(id).unwrap().to_vec())
            .collect();
        if !want.iter().any(|&id| vocab.is_special(id)) {
            assert_eq!(bytes, text.as_bytes(), "token bytes of {text:?}");
        }
        common::assert_streams_like_decode(&vocab, &with_special, text);
    }
    let template = ChatTemplate::from_hf_dir(dir, &vocab)
        .unwrap()
        .expect("the directory has a template");
    for c in doc["chats"].as_array().unwrap() {
        let got = template
            .render(
                &common::json_messages(&c["messages"]),
                c["add_generation_prompt"].as_bool().unwrap(),
            )
            .unwrap();
        assert_eq!(got, c["rendered"].as_str().unwrap(), "chat {}", c["name"]);
    }
    vocab
}

#[test]
fn tiny_hf_tokenizer_matches_transformers() {
    let vocab = check_dir_against_golden(&tiny_dir(), "tiny_hf.json");
    assert_eq!(vocab.spelling(), TokenSpelling::ByteLevel);
    assert!(!vocab.add_bos());
    assert!(vocab
        .eos_ids()
        .contains(&vocab.token_id("<|endoftext|>").unwrap()));
}

#[test]
fn tiny_sentencepiece_hf_tokenizer_matches_transformers() {
    let dir = common::fixtures().join("tokenizer/tiny_spm_hf");
    let vocab = check_dir_against_golden(&dir, "tiny_spm_hf.json");
    assert_eq!(vocab.spelling(), TokenSpelling::SentencePiece);
    assert!(vocab.add_bos());
    // EOS from tokenizer_config.json, then generation_config.json's list (<eos>, <end_of_turn>).
    assert_eq!(vocab.eos_ids(), &[1, 5]);
    // Byte-fallback tokens are ordinary tokens carrying one raw byte each.
    let b = vocab.token_id("<0xF0>").unwrap();
    assert!(!vocab.is_special(b));
    assert_eq!(vocab.token_bytes(b), Some(&[0xf0u8][..]));

    // A run of bytes that never forms a character is not held forever: it comes out as U+FFFDs
    // before finish(), and the pieces still add up to the full decode.
    let junk = vec![vocab.token_id("<0x80>").unwrap(); 40];
    let mut dec = vocab.stream_decoder(false);
    let early: String = junk.iter().map(|&id| dec.push(id).unwrap()).collect();
    assert!(!early.is_empty());
    assert_eq!(
        early + &dec.finish().unwrap(),
        vocab.decode(&junk, false).unwrap()
    );
}

#[test]
fn stream_decoder_holds_split_characters_until_complete() {
    let vocab = Vocab::from_hf_dir(&tiny_dir()).unwrap();
    // The tiny vocabulary has no merges for this emoji, so its four bytes are four tokens.
    let ids = vocab.encode("a😀b", false).unwrap();
    let mut dec = vocab.stream_decoder(false);
    let pieces: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')), "{pieces:?}");
    assert!(
        pieces.iter().any(|p| p.is_empty()),
        "a split character must be held back: {pieces:?}"
    );
    assert_eq!(pieces.concat() + &dec.finish().unwrap(), "a😀b");

    // A sequence cut inside a character: finish() flushes the leftover bytes as U+FFFD.
    let emoji = vocab.encode("😀", false).unwrap();
    assert!(emoji.len() > 1);
    let mut dec = vocab.stream_decoder(false);
    let mut out = String::new();
    for &id in &emoji[..emoji.len() - 1] {
        out.push_str(&dec.push(id).unwrap());
    }
    assert_eq!(out, "");
    let rest = dec.finish().unwrap();
    assert!(rest.contains('\u{fffd}'), "{rest:?}");
    assert_eq!(
        rest,
        vocab.decode(&emoji[..emoji.len() - 1], false).unwrap()
    );
}

#[test]
fn token_bytes_are_raw_bytes() {
    let vocab = Vocab::from_hf_dir(&tiny_dir()).unwrap();
    let ids = vocab.encode("héllo wörld 😀", false).unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| vocab.token_bytes(id).unwrap().to_vec())
        .collect();
    assert_eq!(bytes, "héllo wörld 😀".as_bytes());
    assert_eq!(
        vocab.token_bytes(vocab.token_id("<|im_end|>").unwrap()),
        Some(&b"<|im_end|>"[..])
    );
    assert_eq!(vocab.token_bytes(vocab.n_tokens() as u32), None);
}

#[test]
fn out_of_range_ids_are_invalid_arguments() {
    let vocab = Vocab::from_hf_dir(&tiny_dir()).unwrap();
    let bad = vocab.n_tokens() as u32;
    assert!(
        matches!(vocab.decode(&[1, bad], false), Err(Error::InvalidArgument(m)) if m.contains(&bad.to_string()))
    );
    let mut dec = vocab.stream_decoder(false);
    assert!(matches!(dec.push(u32::MAX), Err(Error::InvalidArgument(_))));
    assert!(!vocab.is_special(u32::MAX));
}

#[test]
fn malformed_tokenizer_json_is_a_model_format_error() {
    let dir = scratch_dir("malformed", |d| {
        std::fs::write(d.join("tokenizer.json"), "{\"model\": 12").unwrap()
    });
    let err = Vocab::from_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::ModelFormat { file, .. } if file == "tokenizer.json"),
        "{err:?}"
    );

    let dir = scratch_dir("wrongshape", |d| {
        std::fs::write(d.join("tokenizer.json"), "{\"model\": {\"type\": \"BPE\"}}").unwrap()
    });
    assert!(matches!(
        Vocab::from_hf_dir(&dir),
        Err(Error::ModelFormat { .. })
    ));

    let dir = scratch_dir("badconfig", |d| {
        std::fs::write(d.join("tokenizer_config.json"), "not json").unwrap()
    });
    let err = Vocab::from_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::ModelFormat { file, .. } if file == "tokenizer_config.json"),
        "{err:?}"
    );

    let missing = std::env::temp_dir().join("edgellm-vocab-does-not-exist");
    assert!(matches!(
        Vocab::from_hf_dir(&missing),
        Err(Error::Io { .. })
    ));
}

#[test]
fn config_add_bos_flag_does_not_override_tokenizer_json() {
    // transformers 5 ignores tokenizer_config.json's add_bos_token when tokenizer.json exists:
    // AutoTokenizer on this edited copy encodes "hi" as [384], no BOS (checked by hand with
    // /work/pyenv); the post-processor in tokenizer.json decides.
    let dir = scratch_dir("addbos", |d| {
        let p = d.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"add_bos_token\": false", "\"add_bos_token\": true");
        assert!(text.contains("\"add_bos_token\": true"));
        std::fs::write(p, text).unwrap();
    });
    let vocab = Vocab::from_hf_dir(&dir).unwrap();
    assert!(!vocab.add_bos());
    assert_eq!(vocab.encode("hi", true).unwrap(), vec![384]);
}

#[test]
fn chat_template_jinja_file_wins_over_config() {
    let dir = scratch_dir("jinjafile", |d| {
        std::fs::write(
            d.join("chat_template.jinja"),
            "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{% endfor %}\n",
        )
        .unwrap()
    });
    let vocab = Vocab::from_hf_dir(&dir).unwrap();
    let t = ChatTemplate::from_hf_dir(&dir, &vocab).unwrap().unwrap();
    // keep_trailing_newline is off in HF's Jinja environment, so the final newline goes.
    assert_eq!(
        t.render(&[msg("user", "x")], false).unwrap(),
        "<|im_start|>[user]"
    );
}

#[test]
fn builtin_styles_match_transformers_rendering() {
    let doc = golden("builtin_templates.json");
    let styles = doc["styles"].as_object().unwrap();
    let mut names: Vec<&str> = ChatTemplate::builtin_styles().collect();
    names.sort();
    assert_eq!(names, styles.keys().map(String::as_str).collect::<Vec<_>>());
    for (style, chats) in styles {
        let t = ChatTemplate::builtin(style).unwrap();
        for c in chats.as_array().unwrap() {
            let got = t.render(
                &common::json_messages(&c["messages"]),
                c["add_generation_prompt"].as_bool().unwrap(),
            );
            match (&c["rendered"], got) {
                (Value::String(want), Ok(got)) => assert_eq!(&got, want, "{style} / {}", c["name"]),
                (Value::Null, Err(Error::InvalidArgument(m))) if c["name"] == "empty" => {
                    assert!(m.contains("empty"))
                }
                (Value::Null, Err(Error::Template(m))) => {
                    assert!(
                        c["error"].as_str().unwrap().contains(&m)
                            || m.contains(c["error"].as_str().unwrap()),
                        "{m}"
                    )
                }
                (want, got) => panic!("{style} / {}: want {want}, got {got:?}", c["name"]),
            }
        }
    }
}

#[test]
fn unknown_builtin_style_lists_the_known_ones() {
    let err = ChatTemplate::builtin("vicuna").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("vicuna") && m.contains("chatml") && m.contains("gemma")),
        "{err:?}"
    );
}

#[test]
fn template_errors_are_template_errors() {
    // Syntax error at compile time.
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }", "", "").unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err:?}");
    // raise_exception carries the template's own message.
    let t = ChatTemplate::new("{{ raise_exception('only user turns, please') }}", "", "").unwrap();
    let err = t.render(&[msg("user", "x")], true).unwrap_err();
    assert!(
        matches!(&err, Error::Template(m) if m.contains("only user turns, please")),
        "{err:?}"
    );
    // Runtime type errors too.
    let t = ChatTemplate::new("{{ messages[0].content + 1 }}", "", "").unwrap();
    assert!(matches!(
        t.render(&[msg("user", "x")], true),
        Err(Error::Template(_))
    ));
}

#[test]
fn python_compat_methods_globals_and_tojson() {
    let src = concat!(
        "{{ messages[0].content.strip().upper() }}|{{ messages[0].content.split(',') | length }}|",
        "{{ messages[0].content.startswith(' a') }}|{{ none }}|{{ bos_token }}{{ eos_token }}|",
        "{{ {'k': 'é\"', 'n': [1, 2.5, true, none]} | tojson }}|{{ strftime_now('%Y') | length }}",
    );
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    let got = t.render(&[msg("user", " a,b ")], false).unwrap();
    // Python: json.dumps({"k": 'é"', "n": [1, 2.5, True, None]}, ensure_ascii=False)
    assert_eq!(
        got,
        "A,B|2|True|None|<s></s>|{\"k\": \"é\\\"\", \"n\": [1, 2.5, true, null]}|4"
    );
}

#[test]
fn added_tokens_numbered_out_of_order_stay_usable() {
    let dir = scratch_dir("hole", |d| {
        let p = d.join("tokenizer.json");
        let mut tj: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        tj["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": 500, "content": "<|hole|>", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        std::fs::write(p, serde_json::to_vec(&tj).unwrap()).unwrap();
    });
    // The tokenizers library renumbers the stray token; whatever id it gets must be usable.
    let vocab = Vocab::from_hf_dir(&dir).unwrap();
    let hole = vocab.token_id("<|hole|>").unwrap();
    assert!((hole as usize) < vocab.n_tokens());
    let ids = vocab.encode("a<|hole|>b", false).unwrap();
    assert!(ids.contains(&hole));
    assert!(vocab.is_special(hole));
    assert_eq!(vocab.decode(&ids, false).unwrap(), "a<|hole|>b");
    assert_eq!(vocab.token_bytes(hole), Some(&b"<|hole|>"[..]));
}
