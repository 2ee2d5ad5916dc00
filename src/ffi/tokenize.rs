//! Tokenizer and chat-template functions of a runtime, with the size-negotiation convention of
//! the C API: pass a buffer and its capacity; when it is too small (or NULL with capacity 0) the
//! call returns `EDGELLM_ERR_BUFFER_TOO_SMALL` and writes only the needed size.

use std::ffi::c_char;

use super::handle;
use super::request::{edgellm_message, read_messages};
use super::runtime::edgellm_runtime;
use super::status::{boundary, edgellm_status, Failure};
use crate::Error;

/// Copies `src` into the caller's buffer when it fits; always reports the needed size.
fn deliver<T: Copy>(src: &[T], buf: *mut T, cap: usize, needed: *mut usize, what: &str) -> Result<(), Failure> {
    handle::write(needed, src.len(), "needed")?;
    if cap < src.len() {
        return Err(Failure::too_small(what, cap, src.len()));
    }
    handle::slice_mut(buf, cap, what)?[..src.len()].copy_from_slice(src);
    Ok(())
}

/// Text plus its terminating NUL, as written to C buffers.
fn with_nul(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.push(0);
    bytes
}

/// Tokenizes `text_len` bytes of UTF-8 `text`; `add_special` adds BOS when the model's
/// vocabulary adds one. Special-token text such as "<|im_start|>" is always recognised.
///
/// Writes the number of ids to `*n_needed` (required). If `cap` is at least that, the ids are
/// written to `ids[0..*n_needed]` and the call returns `EDGELLM_OK`; otherwise it returns
/// `EDGELLM_ERR_BUFFER_TOO_SMALL` and `ids` is untouched (query the size with `ids` NULL and
/// `cap` 0). Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_tokenize(
    rt: *const edgellm_runtime,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    ids: *mut i32,
    cap: usize,
    n_needed: *mut usize,
) -> edgellm_status {
    boundary("edgellm_tokenize", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let text = handle::str_with_len(text, text_len, "text")?;
        handle::require_out(n_needed, "n_needed")?;
        let tokens = runtime
            .tokenize(text, add_special)?
            .into_iter()
            .map(|t| i32::try_from(t).map_err(|_| Error::Internal(format!("token id {t} exceeds int32_t"))))
            .collect::<Result<Vec<i32>, Error>>()?;
        deliver(&tokens, ids, cap, n_needed, "ids")
    })
}

/// Turns `n` token ids into UTF-8 text (special tokens included as their text).
///
/// Writes the buffer size needed, in bytes including the terminating NUL, to `*needed`
/// (required). If `cap` is at least that, the NUL-terminated text is written to `buf`;
/// otherwise the call returns `EDGELLM_ERR_BUFFER_TOO_SMALL` and `buf` is untouched.
/// Negative ids give `EDGELLM_ERR_INVALID_ARGUMENT`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_detokenize(
    rt: *const edgellm_runtime,
    ids: *const i32,
    n: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> edgellm_status {
    boundary("edgellm_detokenize", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let ids = handle::slice(ids, n, "ids")?
            .iter()
            .map(|&t| u32::try_from(t).map_err(|_| Error::InvalidArgument(format!("token id {t} is negative"))))
            .collect::<Result<Vec<u32>, Error>>()?;
        handle::require_out(needed, "needed")?;
        let text = with_nul(runtime.detokenize(&ids)?);
        deliver(&text, buf.cast::<u8>(), cap, needed, "buf")
    })
}

/// Renders `n` chat messages with the model's chat template, or with the built-in template
/// `style` (e.g. "chatml"; NULL = the model's own), appending the assistant generation prompt
/// when `add_generation_prompt` is true. An unknown style gives `EDGELLM_ERR_INVALID_ARGUMENT`
/// with a message listing the known styles; a model without a template of its own, asked for
/// it, gives `EDGELLM_ERR_TEMPLATE`.
///
/// Size negotiation as in `edgellm_detokenize`: `*needed` (required) receives the size in bytes
/// including the terminating NUL. Thread-safe.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn edgellm_apply_chat_template(
    rt: *const edgellm_runtime,
    msgs: *const edgellm_message,
    n: usize,
    add_generation_prompt: bool,
    style: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> edgellm_status {
    boundary("edgellm_apply_chat_template", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let messages = read_messages(msgs, n)?;
        let style = handle::opt_c_str(style, "style")?;
        handle::require_out(needed, "needed")?;
        let text = with_nul(runtime.apply_chat_template(&messages, add_generation_prompt, style)?);
        deliver(&text, buf.cast::<u8>(), cap, needed, "buf")
    })
}
