//! `edgellm_response`: the opaque result of one `edgellm_runtime_handle_request`, read with
//! getters. Mirrors `crate::runtime::request::GenerationOutput`; new result fields become new
//! getters.

use std::ffi::c_char;

use super::handle::{self, Handle};
use super::status::{boundary, edgellm_status, Failure};
use crate::runtime::{FinishReason, GenerationOutput};
use crate::Error;

/// Opaque result of a request: one output per prompt, in prompt order.
#[allow(non_camel_case_types)]
pub struct edgellm_response {
    _private: [u8; 0],
}

/// Why generation of one prompt ended.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum edgellm_finish_reason {
    /// An end-of-generation token was produced.
    EDGELLM_FINISH_EOS = 0,
    /// The maximum generation length (or the context window) was reached.
    EDGELLM_FINISH_LENGTH = 1,
    /// A stop string matched.
    EDGELLM_FINISH_STOP = 2,
    /// The stream callback asked to stop.
    EDGELLM_FINISH_CANCELLED = 3,
    /// An error ended this prompt.
    EDGELLM_FINISH_ERROR = 4,
}

impl From<FinishReason> for edgellm_finish_reason {
    fn from(r: FinishReason) -> Self {
        match r {
            FinishReason::Eos => edgellm_finish_reason::EDGELLM_FINISH_EOS,
            FinishReason::Length => edgellm_finish_reason::EDGELLM_FINISH_LENGTH,
            FinishReason::Stop => edgellm_finish_reason::EDGELLM_FINISH_STOP,
            FinishReason::Cancelled => edgellm_finish_reason::EDGELLM_FINISH_CANCELLED,
            FinishReason::Error => edgellm_finish_reason::EDGELLM_FINISH_ERROR,
        }
    }
}

/// One prompt's output, stored in the shapes the getters hand out.
pub(crate) struct Output {
    /// UTF-8 text followed by one NUL byte.
    text: Vec<u8>,
    ids: Vec<i32>,
    prompt_tokens: usize,
    finish: edgellm_finish_reason,
    ttft_ms: f64,
    decode_tokens_per_s: f64,
    cached_prompt_tokens: usize,
    /// Per generated token: its log-probability, and the top alternatives' ids and
    /// log-probabilities.
    logprobs: Vec<(f32, Vec<i32>, Vec<f32>)>,
}

/// What an `edgellm_response` handle owns.
pub(crate) struct ResponseData {
    outputs: Vec<Output>,
}

impl Handle for edgellm_response {
    type Target = ResponseData;
    const NAME: &'static str = "response";
}

impl ResponseData {
    /// Converts the runtime's outputs; token ids always fit in `int32_t` for real vocabularies.
    pub(crate) fn new(outputs: Vec<GenerationOutput>) -> Result<Self, Failure> {
        let outputs = outputs
            .into_iter()
            .map(|o| {
                let ids = o
                    .token_ids
                    .iter()
                    .map(|&t| i32::try_from(t).map_err(|_| Error::Internal(format!("token id {t} exceeds int32_t"))))
                    .collect::<Result<Vec<i32>, Error>>()?;
                let mut text = o.text.into_bytes();
                text.push(0);
                Ok(Output {
                    text,
                    ids,
                    prompt_tokens: o.prompt_ids.len(),
                    finish: o.finish_reason.into(),
                    ttft_ms: o.ttft_ms,
                    decode_tokens_per_s: o.decode_tokens_per_s,
                    cached_prompt_tokens: o.cached_prompt_tokens,
                    logprobs: o
                        .logprobs
                        .iter()
                        .map(|l| (l.logprob, l.top.iter().map(|&(t, _)| t as i32).collect(), l.top.iter().map(|&(_, p)| p).collect()))
                        .collect(),
                })
            })
            .collect::<Result<Vec<Output>, Failure>>()?;
        Ok(ResponseData { outputs })
    }
}

fn output<'a>(resp: *const edgellm_response, index: usize) -> Result<&'a Output, Failure> {
    let data = handle::borrow(resp)?;
    data.outputs.get(index).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "output index {index} out of range (response has {})",
            data.outputs.len()
        ))
        .into()
    })
}

/// Frees a response and everything its getters returned. NULL is ignored.
#[no_mangle]
pub extern "C" fn edgellm_response_destroy(resp: *mut edgellm_response) {
    super::status::boundary_value((), || handle::destroy(resp));
}

/// Writes the number of outputs (one per prompt of the request) to `*count`.
///
/// Responses are immutable: all getters may be called from several threads at once.
#[no_mangle]
pub extern "C" fn edgellm_response_count(resp: *const edgellm_response, count: *mut usize) -> edgellm_status {
    boundary("edgellm_response_count", || {
        handle::write(count, handle::borrow(resp)?.outputs.len(), "count")
    })
}

/// Writes a pointer to output `index`'s generated text to `*text` and its length in bytes
/// (without the terminating NUL) to `*len` when `len` is not NULL.
///
/// The text is UTF-8 and NUL-terminated, owned by the response and valid until
/// `edgellm_response_destroy`.
#[no_mangle]
pub extern "C" fn edgellm_response_text(
    resp: *const edgellm_response,
    index: usize,
    text: *mut *const c_char,
    len: *mut usize,
) -> edgellm_status {
    boundary("edgellm_response_text", || {
        let out = output(resp, index)?;
        handle::write(text, out.text.as_ptr().cast::<c_char>(), "text")?;
        handle::write_opt(len, out.text.len() - 1);
        Ok(())
    })
}

/// Writes a pointer to output `index`'s generated token ids to `*ids` and their number to
/// `*count`.
///
/// The array is owned by the response and valid until `edgellm_response_destroy`; it may be
/// NULL when `*count` is 0.
#[no_mangle]
pub extern "C" fn edgellm_response_output_ids(
    resp: *const edgellm_response,
    index: usize,
    ids: *mut *const i32,
    count: *mut usize,
) -> edgellm_status {
    boundary("edgellm_response_output_ids", || {
        let out = output(resp, index)?;
        handle::require_out(count, "count")?;
        handle::write(ids, out.ids.as_ptr(), "ids")?;
        handle::write(count, out.ids.len(), "count")
    })
}

/// Writes the number of prompt tokens of output `index` (after templating) to `*count`.
#[no_mangle]
pub extern "C" fn edgellm_response_prompt_token_count(
    resp: *const edgellm_response,
    index: usize,
    count: *mut usize,
) -> edgellm_status {
    boundary("edgellm_response_prompt_token_count", || {
        handle::write(count, output(resp, index)?.prompt_tokens, "count")
    })
}

/// Writes why generation of output `index` ended to `*reason`.
#[no_mangle]
pub extern "C" fn edgellm_response_finish_reason(
    resp: *const edgellm_response,
    index: usize,
    reason: *mut edgellm_finish_reason,
) -> edgellm_status {
    boundary("edgellm_response_finish_reason", || {
        handle::write(reason, output(resp, index)?.finish, "reason")
    })
}

/// Writes the number of output `index`'s prompt tokens whose keys and values came from the
/// prefix cache (a cached system prompt or an earlier request's prefix) to `*count`.
#[no_mangle]
pub extern "C" fn edgellm_response_cached_prompt_tokens(resp: *const edgellm_response, index: usize, count: *mut usize) -> edgellm_status {
    boundary("edgellm_response_cached_prompt_tokens", || {
        handle::write(count, output(resp, index)?.cached_prompt_tokens, "count")
    })
}

/// For generated token `position` of output `index` (of a request that asked for them with
/// `edgellm_request_set_logprobs`), writes its natural-log probability to `*logprob`, and
/// pointers to the ids and log-probabilities of the most likely tokens (most likely first) to
/// `*top_ids` / `*top_logprobs` and their number to `*n_top`. The arrays are owned by the
/// response; out-pointers may be NULL when not wanted. A request without log-probabilities, or
/// a position past the output, is `EDGELLM_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn edgellm_response_logprobs(
    resp: *const edgellm_response,
    index: usize,
    position: usize,
    logprob: *mut f32,
    top_ids: *mut *const i32,
    top_logprobs: *mut *const f32,
    n_top: *mut usize,
) -> edgellm_status {
    boundary("edgellm_response_logprobs", || {
        let o = output(resp, index)?;
        let (lp, ids, lps) = o.logprobs.get(position).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no log-probabilities at position {position} of output {index} ({} recorded; ask with edgellm_request_set_logprobs)",
                o.logprobs.len()
            ))
        })?;
        handle::write_opt(logprob, *lp);
        handle::write_opt(top_ids, ids.as_ptr());
        handle::write_opt(top_logprobs, lps.as_ptr());
        handle::write_opt(n_top, ids.len());
        Ok(())
    })
}

/// Writes output `index`'s time to first token in milliseconds to `*ms`.
#[no_mangle]
pub extern "C" fn edgellm_response_ttft_ms(
    resp: *const edgellm_response,
    index: usize,
    ms: *mut f64,
) -> edgellm_status {
    boundary("edgellm_response_ttft_ms", || {
        handle::write(ms, output(resp, index)?.ttft_ms, "ms")
    })
}

/// Writes output `index`'s decode speed after the first token, in tokens per second, to `*tps`.
#[no_mangle]
pub extern "C" fn edgellm_response_decode_tokens_per_second(
    resp: *const edgellm_response,
    index: usize,
    tps: *mut f64,
) -> edgellm_status {
    boundary("edgellm_response_decode_tokens_per_second", || {
        handle::write(tps, output(resp, index)?.decode_tokens_per_s, "tps")
    })
}
