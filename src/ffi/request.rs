//! `edgellm_request`: an opaque, growable generation request built with setters. Mirrors
//! `crate::runtime::request::GenerationRequest`; new request features become new setters, so the
//! layout C sees never changes.

use std::ffi::{c_char, c_int, c_void};

use super::handle::{self, Handle, Versioned};
use super::status::{boundary, edgellm_status, Failure};
use crate::runtime::{GenerationRequest, Message, PromptInput, SamplingParams};
use crate::Error;

/// Opaque generation request: one or more prompts with shared sampling settings.
#[allow(non_camel_case_types)]
pub struct edgellm_request {
    _private: [u8; 0],
}

/// Stream callback: called for every generated token with the index of its prompt in the
/// request, the token id, and the text that token completed (`text_len` bytes of whole UTF-8
/// characters, also NUL-terminated; may be empty; valid only during the call). Return 0 to go
/// on, non-zero to cancel the request (finish reason `EDGELLM_FINISH_CANCELLED`; the tokens
/// already streamed are kept). After a prompt's last token one more call may deliver text the
/// detokenizer held back (an incomplete character or a stop-string candidate), repeating the
/// last token id. It runs on the thread that called `edgellm_runtime_handle_request` and must
/// not throw or unwind.
#[allow(non_camel_case_types)]
pub type edgellm_stream_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        prompt_index: usize,
        token: i32,
        text: *const c_char,
        text_len: usize,
    ) -> c_int,
>;

/// One chat message: NUL-terminated UTF-8 strings, borrowed only for the duration of the call
/// they are passed to.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct edgellm_message {
    /// `system`, `user`, `assistant` or any role the chat template knows.
    pub role: *const c_char,
    /// Message text.
    pub content: *const c_char,
}

/// Sampling parameters. Get defaults (greedy decoding) from `edgellm_sampling_default_params()`
/// and change fields; never fill `struct_size` by hand, so that a program compiled against this
/// header keeps working with later libraries that append fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct edgellm_sampling_params {
    /// Size of this struct as the caller compiled it; set by `edgellm_sampling_default_params()`.
    pub struct_size: u32,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: u32,
    /// Nucleus probability mass to keep; 1.0 disables.
    pub top_p: f32,
    /// Drop tokens below `min_p` times the top probability; 0 disables.
    pub min_p: f32,
    /// Penalty on logits of tokens already seen; 1.0 disables.
    pub repetition_penalty: f32,
    /// Subtracted once from logits of tokens already generated; 0 disables.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from logits of generated tokens; 0 disables.
    pub frequency_penalty: f32,
    /// Seed of the request's random stream; the same seed gives the same output.
    pub seed: u64,
}

impl Default for edgellm_sampling_params {
    fn default() -> Self {
        let d = SamplingParams::default();
        edgellm_sampling_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            min_p: d.min_p,
            repetition_penalty: d.repetition_penalty,
            presence_penalty: d.presence_penalty,
            frequency_penalty: d.frequency_penalty,
            seed: d.seed,
        }
    }
}

impl Versioned for edgellm_sampling_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "edgellm_sampling_params";
}

/// What an `edgellm_request` handle owns.
pub(crate) struct RequestData {
    pub(crate) request: GenerationRequest,
    pub(crate) stream: edgellm_stream_callback,
    pub(crate) user_data: *mut c_void,
}

/// Wraps `request` (no stream callback yet) in a new handle and writes it to `*out`.
fn store_new(request: GenerationRequest, out: *mut *mut edgellm_request) -> Result<(), Failure> {
    let data = RequestData { request, stream: None, user_data: std::ptr::null_mut() };
    handle::write(out, handle::into_raw::<edgellm_request>(data), "out")
}

impl Handle for edgellm_request {
    type Target = RequestData;
    const NAME: &'static str = "request";
}

/// Rejects sampling values that have no meaning (NaN, negative temperature, probabilities
/// outside 0..=1, a non-positive repetition penalty), naming the field.
pub(crate) fn check_sampling(p: &SamplingParams) -> crate::Result<()> {
    let bad = |field: &str, v: f32, rule: &str| {
        Err(Error::InvalidArgument(format!(
            "sampling {field} = {v} is invalid: {rule}"
        )))
    };
    if !(p.temperature.is_finite() && p.temperature >= 0.0) {
        return bad("temperature", p.temperature, "must be finite and >= 0");
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad("top_p", p.top_p, "must be in (0, 1]");
    }
    if !(0.0..=1.0).contains(&p.min_p) {
        return bad("min_p", p.min_p, "must be in [0, 1]");
    }
    if !(p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0) {
        return bad("repetition_penalty", p.repetition_penalty, "must be finite and > 0");
    }
    if !p.presence_penalty.is_finite() {
        return bad("presence_penalty", p.presence_penalty, "must be finite");
    }
    if !p.frequency_penalty.is_finite() {
        return bad("frequency_penalty", p.frequency_penalty, "must be finite");
    }
    Ok(())
}

/// Reads a C array of messages into owned, UTF-8-checked messages.
pub(crate) fn read_messages(msgs: *const edgellm_message, n: usize) -> Result<Vec<Message>, Failure> {
    handle::slice(msgs, n, "messages")?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Message {
                role: handle::c_str(m.role, &format!("messages[{i}].role"))?.to_string(),
                content: handle::c_str(m.content, &format!("messages[{i}].content"))?.to_string(),
            })
        })
        .collect()
}

fn add_prompt(
    req: *mut edgellm_request,
    index: *mut usize,
    prompt: impl FnOnce() -> Result<PromptInput, Failure>,
) -> Result<(), Failure> {
    let data = handle::borrow_mut(req)?;
    let prompt = prompt()?;
    data.request.prompts.push(prompt);
    handle::write_opt(index, data.request.prompts.len() - 1);
    Ok(())
}

/// Returns sampling parameters with every field at its default: greedy decoding, seed 0, and
/// `struct_size` set. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_sampling_default_params() -> edgellm_sampling_params {
    super::status::boundary_value(edgellm_sampling_params::default(), edgellm_sampling_params::default)
}

/// Creates an empty request (no prompts; chat template applied; greedy sampling; at most 128
/// generated tokens per prompt) and stores it in `*out`.
///
/// The caller owns the request and frees it with `edgellm_request_destroy`. A request may be
/// moved between threads but must not be used by two threads at once.
#[no_mangle]
pub extern "C" fn edgellm_request_create(out: *mut *mut edgellm_request) -> edgellm_status {
    boundary("edgellm_request_create", || {
        handle::require_out(out, "out")?;
        store_new(GenerationRequest::default(), out)
    })
}

/// Frees a request. NULL is ignored. Responses already produced from it stay valid.
#[no_mangle]
pub extern "C" fn edgellm_request_destroy(req: *mut edgellm_request) {
    super::status::boundary_value((), || handle::destroy(req));
}

/// Appends a raw-text prompt of `len` bytes of UTF-8 (no NUL needed) and writes its prompt index
/// to `*index` when `index` is not NULL. The text is copied.
#[no_mangle]
pub extern "C" fn edgellm_request_add_prompt_text(
    req: *mut edgellm_request,
    text: *const c_char,
    len: usize,
    index: *mut usize,
) -> edgellm_status {
    boundary("edgellm_request_add_prompt_text", || {
        add_prompt(req, index, || {
            Ok(PromptInput::Text(handle::str_with_len(text, len, "text")?.to_string()))
        })
    })
}

/// Appends a prompt given as `n` token ids, used verbatim, and writes its prompt index to
/// `*index` when `index` is not NULL. Negative ids are rejected with
/// `EDGELLM_ERR_INVALID_ARGUMENT`. The ids are copied.
#[no_mangle]
pub extern "C" fn edgellm_request_add_prompt_tokens(
    req: *mut edgellm_request,
    tokens: *const i32,
    n: usize,
    index: *mut usize,
) -> edgellm_status {
    boundary("edgellm_request_add_prompt_tokens", || {
        add_prompt(req, index, || {
            let ids = handle::slice(tokens, n, "tokens")?
                .iter()
                .map(|&t| u32::try_from(t).map_err(|_| Error::InvalidArgument(format!("token id {t} is negative"))))
                .collect::<Result<Vec<u32>, Error>>()?;
            Ok(PromptInput::TokenIds(ids))
        })
    })
}

/// Appends a chat prompt of `n` messages (rendered with the chat template when the request
/// applies it) and writes its prompt index to `*index` when `index` is not NULL. The strings are
/// copied.
#[no_mangle]
pub extern "C" fn edgellm_request_add_prompt_messages(
    req: *mut edgellm_request,
    msgs: *const edgellm_message,
    n: usize,
    index: *mut usize,
) -> edgellm_status {
    boundary("edgellm_request_add_prompt_messages", || {
        add_prompt(req, index, || Ok(PromptInput::Messages(read_messages(msgs, n)?)))
    })
}

/// Chooses whether message prompts are rendered with the chat template plus the generation
/// prompt (the default, `true`).
#[no_mangle]
pub extern "C" fn edgellm_request_set_apply_chat_template(req: *mut edgellm_request, apply: bool) -> edgellm_status {
    boundary("edgellm_request_set_apply_chat_template", || {
        handle::borrow_mut(req)?.request.apply_chat_template = apply;
        Ok(())
    })
}

/// Uses the built-in template `style` (e.g. "chatml", "llama3") instead of the model's own
/// template; NULL goes back to the model's template. The string is copied. An unknown style is
/// reported by `edgellm_runtime_handle_request` (`EDGELLM_ERR_INVALID_ARGUMENT`, listing the
/// known styles).
#[no_mangle]
pub extern "C" fn edgellm_request_set_template_style(
    req: *mut edgellm_request,
    style: *const c_char,
) -> edgellm_status {
    boundary("edgellm_request_set_template_style", || {
        let data = handle::borrow_mut(req)?;
        data.request.template_style = handle::opt_c_str(style, "style")?.map(str::to_string);
        Ok(())
    })
}

/// Sets the sampling parameters from `*params` (copied); NULL restores the defaults. Values
/// without meaning (NaN, negative temperature, `top_p` outside (0, 1], ...) give
/// `EDGELLM_ERR_INVALID_ARGUMENT` and leave the request unchanged.
#[no_mangle]
pub extern "C" fn edgellm_request_set_sampling(
    req: *mut edgellm_request,
    params: *const edgellm_sampling_params,
) -> edgellm_status {
    boundary("edgellm_request_set_sampling", || {
        let data = handle::borrow_mut(req)?;
        let p = handle::read_versioned(params)?;
        let sampling = SamplingParams {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repetition_penalty: p.repetition_penalty,
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            seed: p.seed,
        };
        check_sampling(&sampling)?;
        data.request.sampling = sampling;
        Ok(())
    })
}

/// Sets the maximum number of tokens generated per prompt (default 128).
#[no_mangle]
pub extern "C" fn edgellm_request_set_max_generate_length(
    req: *mut edgellm_request,
    max_tokens: usize,
) -> edgellm_status {
    boundary("edgellm_request_set_max_generate_length", || {
        handle::borrow_mut(req)?.request.max_generate_length = max_tokens;
        Ok(())
    })
}

/// Adds a stop string (NUL-terminated UTF-8, copied): generation of a prompt ends when its
/// output ends with it, and it is removed from the text. Empty strings are rejected.
#[no_mangle]
pub extern "C" fn edgellm_request_add_stop(req: *mut edgellm_request, stop: *const c_char) -> edgellm_status {
    boundary("edgellm_request_add_stop", || {
        let data = handle::borrow_mut(req)?;
        let stop = handle::c_str(stop, "stop")?;
        if stop.is_empty() {
            return Err(Error::InvalidArgument("stop string is empty".into()).into());
        }
        data.request.stop.push(stop.to_string());
        Ok(())
    })
}

/// Chooses the request's LoRA adapter by the name it was loaded under (NUL-terminated UTF-8,
/// copied): NULL uses the runtime's default adapter (see `edgellm_runtime_switch_lora`), ""
/// none. `scale` multiplies the adapter's trained scaling (1 = as trained; must be finite). A
/// name that is not loaded is reported by `edgellm_runtime_handle_request`
/// (`EDGELLM_ERR_NOT_FOUND`, naming it). Requests with different adapters run in one batch.
#[no_mangle]
pub extern "C" fn edgellm_request_set_lora(req: *mut edgellm_request, name: *const c_char, scale: f32) -> edgellm_status {
    boundary("edgellm_request_set_lora", || {
        let name = handle::opt_c_str(name, "name")?.map(str::to_string);
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!("the LoRA scale {scale} is not finite")).into());
        }
        let data = handle::borrow_mut(req)?;
        data.request.lora_name = name;
        data.request.lora_scale = scale;
        Ok(())
    })
}

/// Asks for log-probabilities of each generated token: the chosen token's and the `n` most
/// likely tokens' (0 = none, the default; at most 20, else `EDGELLM_ERR_INVALID_ARGUMENT`), from
/// the model's distribution before penalties, temperature and filters. Read them with
/// `edgellm_response_logprobs`.
#[no_mangle]
pub extern "C" fn edgellm_request_set_logprobs(req: *mut edgellm_request, n: usize) -> edgellm_status {
    boundary("edgellm_request_set_logprobs", || {
        if n > crate::runtime::MAX_LOGPROBS {
            return Err(Error::InvalidArgument(format!("{n} log-probabilities per token asked for; at most {} are given", crate::runtime::MAX_LOGPROBS)).into());
        }
        handle::borrow_mut(req)?.request.logprobs = n;
        Ok(())
    })
}

/// Keeps generating past end-of-generation tokens when `ignore` is true (default false).
#[no_mangle]
pub extern "C" fn edgellm_request_set_ignore_eos(req: *mut edgellm_request, ignore: bool) -> edgellm_status {
    boundary("edgellm_request_set_ignore_eos", || {
        handle::borrow_mut(req)?.request.ignore_eos = ignore;
        Ok(())
    })
}

/// Sets (or with a NULL `callback`, removes) the stream callback. `user_data` is passed back
/// unchanged and must stay valid while the request is being handled.
#[no_mangle]
pub extern "C" fn edgellm_request_set_stream_callback(
    req: *mut edgellm_request,
    callback: edgellm_stream_callback,
    user_data: *mut c_void,
) -> edgellm_status {
    boundary("edgellm_request_set_stream_callback", || {
        let data = handle::borrow_mut(req)?;
        data.stream = callback;
        data.user_data = user_data;
        Ok(())
    })
}

/// Asks a request that is being handled to stop: each of its prompts finishes at its next step
/// with `EDGELLM_FINISH_CANCELLED`, and `edgellm_runtime_handle_request` returns `EDGELLM_OK`
/// with what was generated so far.
///
/// Thread-safe: this is the one function that may be called on a request while another thread
/// is inside `edgellm_runtime_handle_request` with it (the request must stay alive until both
/// calls return). Cancellation is sticky: a cancelled request generates nothing when handled
/// again, so build a new request for the next run.
#[no_mangle]
pub extern "C" fn edgellm_request_cancel(req: *const edgellm_request) -> edgellm_status {
    boundary("edgellm_request_cancel", || {
        handle::borrow(req)?.request.cancel.cancel();
        Ok(())
    })
}

/// Builds a request from JSON text (`len` bytes of UTF-8) and stores it in `*out`.
///
/// The text is either one request object or a file object with a `"requests"` array whose
/// top-level fields are defaults for every entry (TensorRT Edge-LLM's input format); `index`
/// picks the entry (0 for a single object; `edgellm_request_count_json` tells how many there
/// are). A top-level `"batch_size"` is accepted and ignored here (see
/// `edgellm_request_from_json_range` and `edgellm_request_batch_size_json`). A request object holds
/// exactly one of `"messages"` (array of `{"role", "content"}`), `"prompt"` (raw text) or
/// `"token_ids"` (array of ids), and optionally `"max_generate_length"` (alias
/// `"max_tokens"`), `"temperature"`, `"top_k"`, `"top_p"`, `"min_p"`, `"repetition_penalty"`,
/// `"presence_penalty"`, `"frequency_penalty"`, `"seed"`, `"stop"` (array of strings),
/// `"ignore_eos"`, `"apply_chat_template"`, `"template_style"`, `"lora_name"`, `"lora_scale"` and `"logprobs"`. Unknown fields are errors
/// (`EDGELLM_ERR_INVALID_ARGUMENT`, naming the field), so typos do not pass silently.
///
/// The caller owns the request (free with `edgellm_request_destroy`); `*out` is written only on
/// success. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_request_from_json(
    json: *const c_char,
    len: usize,
    index: usize,
    out: *mut *mut edgellm_request,
) -> edgellm_status {
    boundary("edgellm_request_from_json", || {
        let text = handle::str_with_len(json, len, "json")?;
        handle::require_out(out, "out")?;
        store_new(super::request_json::parse(text, index)?, out)
    })
}

/// Builds one request from entries `first .. first + count` of the `"requests"` array of JSON
/// text (`len` bytes of UTF-8) and stores it in `*out`: its prompts are those entries' prompts,
/// in order, so that response output `i` belongs to entry `first + i`.
///
/// The entries are read as in `edgellm_request_from_json` (top-level fields are defaults). A
/// request has one set of settings, so every entry of the range must resolve to the same
/// sampling parameters, `"max_generate_length"`, `"stop"` list, `"ignore_eos"`,
/// `"apply_chat_template"` and `"template_style"`; otherwise the call fails with
/// `EDGELLM_ERR_INVALID_ARGUMENT` naming the entry and field. A range past the end, or `count`
/// 0, is also `EDGELLM_ERR_INVALID_ARGUMENT`; a single request object is the range 0, 1.
///
/// The caller owns the request (free with `edgellm_request_destroy`); `*out` is written only on
/// success. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_request_from_json_range(
    json: *const c_char,
    len: usize,
    first: usize,
    count: usize,
    out: *mut *mut edgellm_request,
) -> edgellm_status {
    boundary("edgellm_request_from_json_range", || {
        let text = handle::str_with_len(json, len, "json")?;
        handle::require_out(out, "out")?;
        store_new(super::request_json::parse_range(text, first, count)?, out)
    })
}

/// Writes the top-level `"batch_size"` of JSON text (`len` bytes of UTF-8) to `*batch_size`:
/// how many consecutive `"requests"` entries form one batch (pass it as `count` to
/// `edgellm_request_from_json_range`; the last batch may be shorter). 1 when absent; zero,
/// negative or non-integer values are `EDGELLM_ERR_INVALID_ARGUMENT`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_request_batch_size_json(
    json: *const c_char,
    len: usize,
    batch_size: *mut usize,
) -> edgellm_status {
    boundary("edgellm_request_batch_size_json", || {
        let text = handle::str_with_len(json, len, "json")?;
        handle::require_out(batch_size, "batch_size")?;
        handle::write(batch_size, super::request_json::batch_size(text)?, "batch_size")
    })
}

/// Writes the number of requests in JSON text (`len` bytes of UTF-8) to `*count`: the length of
/// its `"requests"` array, or 1 for a single request object. See `edgellm_request_from_json`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_request_count_json(json: *const c_char, len: usize, count: *mut usize) -> edgellm_status {
    boundary("edgellm_request_count_json", || {
        let text = handle::str_with_len(json, len, "json")?;
        handle::require_out(count, "count")?;
        handle::write(count, super::request_json::count(text)?, "count")
    })
}
