//! The GGUF vocabulary path without a model file: the committed tiny byte-level tokenizer
//! (tests/fixtures/tokenizer/tiny_hf) written out as llama.cpp's `tokenizer.ggml.*` metadata must
//! tokenize exactly as transformers tokenizes the original directory (goldens in tiny_hf.json,
//! from tests/fixtures/gen_tokenizer_golden.py); malformed metadata is refused with the key named.

mod common;

use edgellm::loader::metadata::{MetaValue, Metadata};
use edgellm::vocab::{ChatTemplate, Vocab};
use edgellm::Error;
use serde_json::Value;

fn read(name: &str) -> Value {
    let p = common::fixtures().join("tokenizer").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn strs(v: &[String]) -> MetaValue {
    MetaValue::Array(v.iter().map(|s| MetaValue::Str(s.clone())).collect())
}

/// The tiny tokenizer as GGUF metadata: tokens in id order, merges as "a b", the three added
/// tokens marked CONTROL (3), everything else NORMAL (1). Its pre-tokenizer (digits, then the
/// GPT-2 rule) is llama.cpp's `smollm`.
fn tiny_metadata() -> Metadata {
    let tj = read("tiny_hf/tokenizer.json");
    let vocab = tj["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()))
        .collect();
    let types = MetaValue::Array(
        (0..tokens.len())
            .map(|i| MetaValue::I32(if i < 3 { 3 } else { 1 }))
            .collect(),
    );
    let config = read("tiny_hf/tokenizer_config.json");
    let mut meta = Metadata {
        source: "tiny.gguf".into(),
        ..Default::default()
    };
    let e = &mut meta.entries;
    e.insert(
        "general.architecture".into(),
        MetaValue::Str("llama".into()),
    );
    e.insert("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into()));
    e.insert("tokenizer.ggml.pre".into(), MetaValue::Str("smollm".into()));
    e.insert("tokenizer.ggml.tokens".into(), strs(&tokens));
    e.insert("tokenizer.ggml.merges".into(), strs(&merges));
    e.insert("tokenizer.ggml.token_type".into(), types);
    e.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1));
    e.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2));
    e.insert(
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(false),
    );
    e.insert(
        "tokenizer.chat_template".into(),
        MetaValue::Str(config["chat_template"].as_str().unwrap().into()),
    );
    meta
}

#[test]
fn tiny_vocab_from_metadata_matches_transformers() {
    let doc = read("tiny_hf.json");
    let vocab = Vocab::from_gguf(&tiny_metadata()).unwrap();
    assert_eq!(
        vocab.n_tokens(),
        doc["vocab_size"].as_u64().unwrap() as usize
    );
    assert_eq!(vocab.bos_id(), Some(1));
    assert!(!vocab.add_bos());
    assert_eq!(vocab.eos_ids(), &[2, 0]);
    assert!(vocab.is_special(0) && vocab.is_special(2) && !vocab.is_special(3));
    for s in doc["strings"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        let want = common::json_ids(&s["ids"]);
        assert_eq!(vocab.encode(text, false).unwrap(), want, "ids of {text:?}");
        assert_eq!(
            vocab.decode(&want, false).unwrap(),
            s["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
        let with_special = common::json_ids(&s["ids_with_special"]);
        assert_eq!(
            vocab.decode(&with_special, true).unwrap(),
            s["decoded_skip_special"].as_str().unwrap()
        );
    }
    let template = ChatTemplate::from_gguf(&tiny_metadata(), &vocab)
        .unwrap()
        .unwrap();
    for c in doc["chats"].as_array().unwrap() {
        let msgs: Vec<edgellm::runtime::Message> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| edgellm::runtime::Message {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        let got = template
            .render(&msgs, c["add_generation_prompt"].as_bool().unwrap())
            .unwrap();
        assert_eq!(got, c["rendered"].as_str().unwrap());
    }
}

#[test]
fn add_bos_and_add_eos_flags_wrap_the_ids() {
    let mut meta = tiny_metadata();
    meta.entries
        .insert("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true));
    meta.entries
        .insert("tokenizer.ggml.add_eos_token".into(), MetaValue::Bool(true));
    let vocab = Vocab::from_gguf(&meta).unwrap();
    assert!(vocab.add_bos());
    let plain = vocab.encode("hello", false).unwrap();
    let wrapped = vocab.encode("hello", true).unwrap();
    assert_eq!(wrapped.first(), Some(&1));
    assert_eq!(wrapped.last(), Some(&2));
    assert_eq!(&wrapped[1..wrapped.len() - 1], &plain[..]);
}

#[test]
fn eot_and_eom_ids_end_generation_too() {
    let mut meta = tiny_metadata();
    meta.entries
        .insert("tokenizer.ggml.eot_token_id".into(), MetaValue::U32(1));
    let vocab = Vocab::from_gguf(&meta).unwrap();
    assert_eq!(vocab.eos_ids(), &[2, 1, 0]);
}

fn refused(edit: impl FnOnce(&mut Metadata)) -> Error {
    let mut meta = tiny_metadata();
    edit(&mut meta);
    Vocab::from_gguf(&meta).unwrap_err()
}

#[test]
fn malformed_metadata_is_refused_naming_the_key() {
    let err = refused(|m| {
        m.entries.remove("tokenizer.ggml.model");
    });
    assert!(
        matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("tokenizer.ggml.model")),
        "{err:?}"
    );

    let err = refused(|m| {
        m.entries.remove("tokenizer.ggml.tokens");
    });
    assert!(
        matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("tokenizer.ggml.tokens")),
        "{err:?}"
    );

    let err = refused(|m| {
        m.entries.remove("tokenizer.ggml.merges");
    });
    assert!(
        matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("tokenizer.ggml.merges")),
        "{err:?}"
    );

    let err = refused(|m| {
        m.entries.insert(
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(vec![MetaValue::I32(1)]),
        );
    });
    assert!(
        matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("token_type")),
        "{err:?}"
    );

    let err = refused(|m| {
        m.entries
            .insert("tokenizer.ggml.merges".into(), strs(&["a b c".to_string()]));
    });
    assert!(
        matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("a b c")),
        "{err:?}"
    );

    // A merge whose pieces are not in the vocabulary.
    let err = refused(|m| {
        m.entries.insert(
            "tokenizer.ggml.merges".into(),
            strs(&["zzz qqq".to_string()]),
        );
    });
    assert!(matches!(&err, Error::ModelFormat { .. }), "{err:?}");

    let err = refused(|m| {
        m.entries
            .insert("tokenizer.ggml.model".into(), MetaValue::Str("bert".into()));
    });
    assert!(
        matches!(&err, Error::Unsupported(msg) if msg.contains("bert")),
        "{err:?}"
    );

    let err = refused(|m| {
        m.entries
            .insert("tokenizer.ggml.tokens".into(), MetaValue::U32(7));
    });
    assert!(matches!(&err, Error::ModelFormat { .. }), "{err:?}");

    // SentencePiece vocabularies without merges need scores to rank them.
    let err = refused(|m| {
        m.entries.insert(
            "tokenizer.ggml.model".into(),
            MetaValue::Str("llama".into()),
        );
        m.entries.remove("tokenizer.ggml.merges");
    });
    assert!(
        matches!(&err, Error::ModelFormat { msg, .. } if msg.contains("tokenizer.ggml.scores")),
        "{err:?}"
    );
}

#[test]
fn out_of_range_special_ids_are_ignored_not_trusted() {
    let mut meta = tiny_metadata();
    meta.entries.insert(
        "tokenizer.ggml.bos_token_id".into(),
        MetaValue::U32(1_000_000),
    );
    meta.entries.insert(
        "tokenizer.ggml.eos_token_id".into(),
        MetaValue::U32(u32::MAX),
    );
    let vocab = Vocab::from_gguf(&meta).unwrap();
    assert_eq!(vocab.bos_id(), None);
    // Only the end-of-turn tokens found by name remain: <|im_end|> and <|endoftext|>.
    assert_eq!(vocab.eos_ids(), &[2, 0]);
}

#[test]
fn bad_template_in_metadata_is_a_template_error() {
    let mut meta = tiny_metadata();
    meta.entries.insert(
        "tokenizer.chat_template".into(),
        MetaValue::Str("{% if %}".into()),
    );
    let vocab = Vocab::from_gguf(&meta).unwrap();
    assert!(matches!(
        ChatTemplate::from_gguf(&meta, &vocab),
        Err(Error::Template(_))
    ));
}
