// libedgellm C++ wrapper: header-only RAII owners over the C API in edgellm.h.
//
// Nothing here throws: every fallible call returns an edgellm::Status (or an edgellm::Expected
// holding a value or a Status). Objects are move-only and free their C handle on destruction.
// Thread-safety is that of the C functions underneath (see edgellm.h): a Runtime may serve
// several threads at once; a Request is used by one thread at a time, except cancel().
#ifndef EDGELLM_HPP
#define EDGELLM_HPP

#include "edgellm.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgellm {

// The outcome of a call: a status code and, on failure, the library's detailed message.
class Status {
public:
    Status() = default;
    Status(edgellm_status code, std::string message) : code_(code), message_(std::move(message)) {}

    // Captures the result of a C call made on this thread (reads edgellm_last_error on failure).
    static Status from(edgellm_status code) {
        return code == EDGELLM_OK ? Status() : Status(code, edgellm_last_error());
    }

    bool ok() const { return code_ == EDGELLM_OK; }
    explicit operator bool() const { return ok(); }
    edgellm_status code() const { return code_; }
    const std::string& message() const { return message_; }

private:
    edgellm_status code_ = EDGELLM_OK;
    std::string message_;
};

// A value or the Status explaining why there is none.
template <typename T>
class Expected {
public:
    Expected(T value) : value_(std::move(value)) {}
    Expected(Status status) : status_(std::move(status)) {}

    bool ok() const { return status_.ok(); }
    explicit operator bool() const { return ok(); }
    const Status& status() const { return status_; }
    // The value; call only when ok().
    T& value() { return *value_; }
    const T& value() const { return *value_; }

private:
    std::optional<T> value_;
    Status status_;
};

// One chat message.
struct Message {
    std::string role;
    std::string content;
};

// Library version string ("MAJOR.MINOR.PATCH").
inline std::string version() { return edgellm_version(); }

namespace detail {
template <typename H, void (*Destroy)(H*)>
struct Deleter {
    void operator()(H* h) const { Destroy(h); }
};

inline std::vector<edgellm_message> c_messages(const std::vector<Message>& messages) {
    std::vector<edgellm_message> out;
    out.reserve(messages.size());
    for (const Message& m : messages) out.push_back(edgellm_message{m.role.c_str(), m.content.c_str()});
    return out;
}

// Runs a C call with the size-query convention twice: once to learn the size, once to fill.
template <typename T, typename Call>
Status fill(std::vector<T>& out, Call call) {
    size_t needed = 0;
    edgellm_status st = call(static_cast<T*>(nullptr), size_t{0}, &needed);
    if (st != EDGELLM_OK && st != EDGELLM_ERR_BUFFER_TOO_SMALL) return Status::from(st);
    out.assign(needed, T{});
    if (needed == 0) return Status();
    return Status::from(call(out.data(), out.size(), &needed));
}
}  // namespace detail

// One request's result: an output per prompt, in prompt order.
class Response {
public:
    Response() = default;
    explicit Response(edgellm_response* raw) : h_(raw) {}

    size_t count() const {
        size_t n = 0;
        return edgellm_response_count(h_.get(), &n) == EDGELLM_OK ? n : 0;
    }
    // Generated text of output i (empty when i is out of range).
    std::string text(size_t i) const {
        const char* p = nullptr;
        size_t len = 0;
        return edgellm_response_text(h_.get(), i, &p, &len) == EDGELLM_OK ? std::string(p, len) : std::string();
    }
    // Generated token ids of output i.
    std::vector<int32_t> token_ids(size_t i) const {
        const int32_t* p = nullptr;
        size_t n = 0;
        if (edgellm_response_output_ids(h_.get(), i, &p, &n) != EDGELLM_OK || n == 0) return {};
        return std::vector<int32_t>(p, p + n);
    }
    size_t prompt_token_count(size_t i) const {
        size_t n = 0;
        return edgellm_response_prompt_token_count(h_.get(), i, &n) == EDGELLM_OK ? n : 0;
    }
    edgellm_finish_reason finish_reason(size_t i) const {
        edgellm_finish_reason r = EDGELLM_FINISH_ERROR;
        edgellm_response_finish_reason(h_.get(), i, &r);
        return r;
    }
    double ttft_ms(size_t i) const {
        double v = 0.0;
        edgellm_response_ttft_ms(h_.get(), i, &v);
        return v;
    }
    double decode_tokens_per_second(size_t i) const {
        double v = 0.0;
        edgellm_response_decode_tokens_per_second(h_.get(), i, &v);
        return v;
    }
    // Prompt tokens of output i whose keys and values came from the prefix cache.
    size_t cached_prompt_tokens(size_t i) const {
        size_t n = 0;
        return edgellm_response_cached_prompt_tokens(h_.get(), i, &n) == EDGELLM_OK ? n : 0;
    }
    const edgellm_response* get() const { return h_.get(); }

private:
    std::unique_ptr<edgellm_response, detail::Deleter<edgellm_response, edgellm_response_destroy>> h_;
};

// Lower-case name of a finish reason, as used in JSON output.
inline const char* finish_reason_name(edgellm_finish_reason r) {
    switch (r) {
        case EDGELLM_FINISH_EOS: return "eos";
        case EDGELLM_FINISH_LENGTH: return "length";
        case EDGELLM_FINISH_STOP: return "stop";
        case EDGELLM_FINISH_CANCELLED: return "cancelled";
        default: return "error";
    }
}

// Stream callback: prompt index, token id and the text it completed; return false to cancel.
using StreamFn = std::function<bool(size_t prompt_index, int32_t token, std::string_view text)>;

// A generation request built with setters. Move-only.
class Request {
public:
    // Makes an empty request (check valid(): creation fails only when out of memory).
    Request() {
        edgellm_request* raw = nullptr;
        if (edgellm_request_create(&raw) == EDGELLM_OK) h_.reset(raw);
    }
    // Request number `index` of JSON text (see edgellm_request_from_json).
    static Expected<Request> from_json(std::string_view json, size_t index = 0) {
        edgellm_request* raw = nullptr;
        edgellm_status st = edgellm_request_from_json(json.data(), json.size(), index, &raw);
        if (st != EDGELLM_OK) return Status::from(st);
        return Request(raw);
    }
    // One request whose prompts are entries [first, first + count) of JSON text, in order
    // (see edgellm_request_from_json_range).
    static Expected<Request> from_json_range(std::string_view json, size_t first, size_t count) {
        edgellm_request* raw = nullptr;
        edgellm_status st = edgellm_request_from_json_range(json.data(), json.size(), first, count, &raw);
        if (st != EDGELLM_OK) return Status::from(st);
        return Request(raw);
    }
    // The "batch_size" of JSON text: 1 when absent (see edgellm_request_batch_size_json).
    static Expected<size_t> batch_size_json(std::string_view json) {
        size_t n = 0;
        edgellm_status st = edgellm_request_batch_size_json(json.data(), json.size(), &n);
        if (st != EDGELLM_OK) return Status::from(st);
        return n;
    }
    // Number of requests in JSON text.
    static Expected<size_t> count_json(std::string_view json) {
        size_t n = 0;
        edgellm_status st = edgellm_request_count_json(json.data(), json.size(), &n);
        if (st != EDGELLM_OK) return Status::from(st);
        return n;
    }

    bool valid() const { return h_ != nullptr; }

    Status add_text(std::string_view text) {
        return Status::from(edgellm_request_add_prompt_text(h_.get(), text.data(), text.size(), nullptr));
    }
    Status add_tokens(const std::vector<int32_t>& ids) {
        return Status::from(edgellm_request_add_prompt_tokens(h_.get(), ids.data(), ids.size(), nullptr));
    }
    Status add_messages(const std::vector<Message>& messages) {
        std::vector<edgellm_message> c = detail::c_messages(messages);
        return Status::from(edgellm_request_add_prompt_messages(h_.get(), c.data(), c.size(), nullptr));
    }
    Status set_sampling(const edgellm_sampling_params& p) {
        return Status::from(edgellm_request_set_sampling(h_.get(), &p));
    }
    Status set_max_generate_length(size_t n) {
        return Status::from(edgellm_request_set_max_generate_length(h_.get(), n));
    }
    Status add_stop(const std::string& stop) { return Status::from(edgellm_request_add_stop(h_.get(), stop.c_str())); }
    Status set_ignore_eos(bool v) { return Status::from(edgellm_request_set_ignore_eos(h_.get(), v)); }
    // Chooses the LoRA adapter by name ("" = none; std::nullopt = the runtime's default adapter)
    // and its scale (1 = as trained); see edgellm_request_set_lora.
    Status set_lora(const std::optional<std::string>& name, float scale = 1.0f) {
        return Status::from(edgellm_request_set_lora(h_.get(), name ? name->c_str() : nullptr, scale));
    }
    Status set_apply_chat_template(bool v) {
        return Status::from(edgellm_request_set_apply_chat_template(h_.get(), v));
    }
    // Built-in template style instead of the model's own; empty goes back to the model's.
    Status set_template_style(const std::string& style) {
        return Status::from(edgellm_request_set_template_style(h_.get(), style.empty() ? nullptr : style.c_str()));
    }
    // Streams tokens to `fn` while the request is handled; an empty function removes it.
    Status set_stream(StreamFn fn) {
        if (!fn) {
            stream_.reset();
            return Status::from(edgellm_request_set_stream_callback(h_.get(), nullptr, nullptr));
        }
        // Heap-held so the address given to C stays valid when the Request is moved.
        stream_ = std::make_unique<StreamFn>(std::move(fn));
        return Status::from(edgellm_request_set_stream_callback(h_.get(), &Request::trampoline, stream_.get()));
    }
    // Stops a request being handled on another thread (thread-safe, sticky).
    Status cancel() const { return Status::from(edgellm_request_cancel(h_.get())); }

    const edgellm_request* get() const { return h_.get(); }

private:
    explicit Request(edgellm_request* raw) : h_(raw) {}

    static int trampoline(void* user, size_t prompt, int32_t token, const char* text, size_t len) {
        auto* fn = static_cast<StreamFn*>(user);
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
        try {
            return (*fn)(prompt, token, std::string_view(text, len)) ? 0 : 1;
        } catch (...) {
            return 1;  // an exception must not unwind into the library: cancel instead
        }
#else
        return (*fn)(prompt, token, std::string_view(text, len)) ? 0 : 1;
#endif
    }

    std::unique_ptr<edgellm_request, detail::Deleter<edgellm_request, edgellm_request_destroy>> h_;
    std::unique_ptr<StreamFn> stream_;
};

// A loaded model. Move-only; thread-safe for concurrent requests.
class Runtime {
public:
    Runtime() = default;

    // Loads a GGUF file or Hugging Face directory; `params` NULL means defaults.
    static Expected<Runtime> create(const std::string& path, const edgellm_runtime_params* params = nullptr) {
        edgellm_runtime* raw = nullptr;
        edgellm_status st = edgellm_runtime_create(path.c_str(), params, &raw);
        if (st != EDGELLM_OK) return Status::from(st);
        Runtime rt;
        rt.h_.reset(raw);
        return Expected<Runtime>(std::move(rt));
    }

    std::string architecture() const {
        const char* p = nullptr;
        return edgellm_runtime_architecture(h_.get(), &p) == EDGELLM_OK ? std::string(p) : std::string();
    }
    std::string model_name() const {
        const char* p = nullptr;
        return edgellm_runtime_model_name(h_.get(), &p) == EDGELLM_OK ? std::string(p) : std::string();
    }
    size_t vocab_size() const {
        size_t n = 0;
        return edgellm_runtime_vocab_size(h_.get(), &n) == EDGELLM_OK ? n : 0;
    }
    size_t context_length() const {
        size_t n = 0;
        return edgellm_runtime_context_length(h_.get(), &n) == EDGELLM_OK ? n : 0;
    }
    size_t layer_count() const {
        size_t n = 0;
        return edgellm_runtime_layer_count(h_.get(), &n) == EDGELLM_OK ? n : 0;
    }

    Expected<std::vector<int32_t>> tokenize(std::string_view text, bool add_special = true) const {
        std::vector<int32_t> ids;
        Status st = detail::fill(ids, [&](int32_t* buf, size_t cap, size_t* needed) {
            return edgellm_tokenize(h_.get(), text.data(), text.size(), add_special, buf, cap, needed);
        });
        if (!st) return st;
        return ids;
    }
    Expected<std::string> detokenize(const std::vector<int32_t>& ids) const {
        std::vector<char> buf;
        Status st = detail::fill(buf, [&](char* b, size_t cap, size_t* needed) {
            return edgellm_detokenize(h_.get(), ids.data(), ids.size(), b, cap, needed);
        });
        if (!st) return st;
        return std::string(buf.data(), buf.empty() ? 0 : buf.size() - 1);
    }
    // Renders messages with the model's template, or the built-in `style` when not empty.
    Expected<std::string> apply_chat_template(const std::vector<Message>& messages, bool add_generation_prompt = true,
                                              const std::string& style = std::string()) const {
        std::vector<edgellm_message> c = detail::c_messages(messages);
        const char* s = style.empty() ? nullptr : style.c_str();
        std::vector<char> buf;
        Status st = detail::fill(buf, [&](char* b, size_t cap, size_t* needed) {
            return edgellm_apply_chat_template(h_.get(), c.data(), c.size(), add_generation_prompt, s, b, cap, needed);
        });
        if (!st) return st;
        return std::string(buf.data(), buf.empty() ? 0 : buf.size() - 1);
    }

    // Generates for every prompt of `req` (streaming through its callback, if set).
    Expected<Response> handle(const Request& req) const {
        edgellm_response* raw = nullptr;
        edgellm_status st = edgellm_runtime_handle_request(h_.get(), req.get(), &raw);
        if (st != EDGELLM_OK) return Status::from(st);
        return Response(raw);
    }

    Status capture_cuda_graph() const { return Status::from(edgellm_runtime_capture_cuda_graph(h_.get())); }

    // Prefills `system_prompt` once and pins its KV blocks in the prefix cache, computed with
    // adapter `lora_name` (std::nullopt = the runtime's default, "" = none); returns the number
    // of prompt tokens cached (see edgellm_runtime_cache_system_prompt).
    Expected<size_t> cache_system_prompt(const std::string& system_prompt,
                                         const std::optional<std::string>& lora_name = std::nullopt) const {
        size_t n = 0;
        edgellm_status st = edgellm_runtime_cache_system_prompt(h_.get(), system_prompt.c_str(),
                                                                lora_name ? lora_name->c_str() : nullptr, &n);
        if (st != EDGELLM_OK) return Status::from(st);
        return n;
    }
    // Writes every cached prefix block to `path`; returns the number of blocks written.
    Expected<size_t> save_prefix_cache(const std::string& path) const {
        size_t n = 0;
        edgellm_status st = edgellm_runtime_save_prefix_cache(h_.get(), path.c_str(), &n);
        if (st != EDGELLM_OK) return Status::from(st);
        return n;
    }
    // Loads a prefix cache saved for this model; returns the number of blocks added.
    Expected<size_t> load_prefix_cache(const std::string& path) const {
        size_t n = 0;
        edgellm_status st = edgellm_runtime_load_prefix_cache(h_.get(), path.c_str(), &n);
        if (st != EDGELLM_OK) return Status::from(st);
        return n;
    }
    // Loads the PEFT LoRA adapter directory `path` under `name` (replacing one of that name).
    Status load_lora(const std::string& name, const std::string& path) const {
        return Status::from(edgellm_runtime_load_lora(h_.get(), name.c_str(), path.c_str()));
    }
    // Unloads adapter `name` and drops the prefixes cached with it.
    Status unload_lora(const std::string& name) const {
        return Status::from(edgellm_runtime_unload_lora(h_.get(), name.c_str()));
    }
    // Makes adapter `name` the default of requests that name none ("" = no adapter).
    Status switch_lora(const std::string& name) const {
        return Status::from(edgellm_runtime_switch_lora(h_.get(), name.c_str()));
    }
    // The runtime's memory by kind and its counters (see edgellm_runtime_get_metrics).
    Expected<edgellm_runtime_metrics> metrics() const {
        edgellm_runtime_metrics m{};
        m.struct_size = sizeof m;
        edgellm_status st = edgellm_runtime_get_metrics(h_.get(), &m);
        if (st != EDGELLM_OK) return Status::from(st);
        return m;
    }

    const edgellm_runtime* get() const { return h_.get(); }

private:
    std::unique_ptr<edgellm_runtime, detail::Deleter<edgellm_runtime, edgellm_runtime_destroy>> h_;
};

}  // namespace edgellm

#endif  // EDGELLM_HPP
