// llm_inference: run a model on one prompt or on a JSON file of requests, in the manner of
// TensorRT Edge-LLM's example of the same name, using the C++ wrapper of libedgellm.
//
//   llm_inference --model M.gguf --prompt "Hello" [--system TEXT] [--max-tokens N]
//                 [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stream]
//   llm_inference --model M.gguf --input requests.json --output out.json [--stream]
//
// The input file uses TensorRT Edge-LLM's format and is parsed by the library:
//   {"batch_size": 2, "temperature": 1.0, "top_p": 1.0, "top_k": 50, "max_generate_length": 128,
//    "apply_chat_template": true,
//    "requests": [{"messages": [{"role": "user", "content": "..."}], "stop": ["..."]}, ...]}
// Top-level fields are defaults for every entry (entries may also set our other fields, see
// edgellm_request_from_json). Consecutive runs of batch_size entries are handled as one
// generation request with several prompts (edgellm_request_from_json_range); the entries of
// one batch must agree on sampling, limits, stop strings and template settings.
// The output file has one flat entry per input request, in input order:
//   {"responses": [{"output_text": ..., "output_ids": [...], "finish_reason": "eos|length|stop|
//    cancelled|error", "prompt_tokens": N, "generated_tokens": N, "ttft_ms": T,
//    "decode_tokens_per_second": R, "batch": B}, ...], "model": ..., "load_ms": ..., ...}
#include "edgellm.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <type_traits>
#include <string>
#include <vector>

namespace {

struct Options {
    std::string model, prompt, system, input, output, template_style;
    size_t max_tokens = 128;
    float temperature = 0.0f;
    unsigned top_k = 0;
    float top_p = 1.0f;
    unsigned long long seed = 0;
    unsigned threads = 0;
    unsigned context = 0;
    bool stream = false;
};

void usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s --model PATH (--prompt TEXT | --input FILE.json) [options]\n"
                 "  --system TEXT          system message for --prompt\n"
                 "  --max-tokens N         tokens to generate (default 128)\n"
                 "  --temperature T        0 = greedy (default)\n"
                 "  --top-k K, --top-p P   sampling filters\n"
                 "  --seed S               random seed\n"
                 "  --template-style NAME  built-in chat template instead of the model's\n"
                 "  --threads N            CPU threads (default: all cores)\n"
                 "  --context N            context window (default: the model's)\n"
                 "  --stream               print tokens as they are generated\n"
                 "  --output FILE.json     write results as JSON\n"
                 "With --input, sampling and limits come from the file, not from the options.\n",
                 argv0);
}

// Parses a number argument strictly; returns false on junk or overflow.
template <typename T>
bool parse_number(const char* s, T& out) {
    char* end = nullptr;
    errno = 0;
    if constexpr (std::is_floating_point_v<T>) {
        double v = std::strtod(s, &end);
        out = static_cast<T>(v);
    } else {
        if (*s == '-') return false;
        unsigned long long v = std::strtoull(s, &end, 10);
        out = static_cast<T>(v);
        if (static_cast<unsigned long long>(out) != v) return false;
    }
    return errno == 0 && end != s && *end == '\0';
}

bool parse_args(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](const char*& v) {
            if (i + 1 >= argc) return false;
            v = argv[++i];
            return true;
        };
        const char* v = nullptr;
        bool ok = true;
        if (a == "--stream") o.stream = true;
        else if (a == "--model") ok = value(v) && (o.model = v, true);
        else if (a == "--prompt") ok = value(v) && (o.prompt = v, true);
        else if (a == "--system") ok = value(v) && (o.system = v, true);
        else if (a == "--input") ok = value(v) && (o.input = v, true);
        else if (a == "--output") ok = value(v) && (o.output = v, true);
        else if (a == "--template-style") ok = value(v) && (o.template_style = v, true);
        else if (a == "--max-tokens") ok = value(v) && parse_number(v, o.max_tokens);
        else if (a == "--temperature") ok = value(v) && parse_number(v, o.temperature);
        else if (a == "--top-k") ok = value(v) && parse_number(v, o.top_k);
        else if (a == "--top-p") ok = value(v) && parse_number(v, o.top_p);
        else if (a == "--seed") ok = value(v) && parse_number(v, o.seed);
        else if (a == "--threads") ok = value(v) && parse_number(v, o.threads);
        else if (a == "--context") ok = value(v) && parse_number(v, o.context);
        else {
            std::fprintf(stderr, "unknown argument: %s\n", a.c_str());
            return false;
        }
        if (!ok) {
            std::fprintf(stderr, "bad or missing value for %s\n", a.c_str());
            return false;
        }
    }
    if (o.model.empty() || (o.prompt.empty() == o.input.empty())) {
        std::fprintf(stderr, "need --model and exactly one of --prompt, --input\n");
        return false;
    }
    return true;
}

// JSON string literal for UTF-8 text.
std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    return out + "\"";
}

std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

// Output `i` of a response as one entry of the output file's "responses" array.
std::string response_json(const edgellm::Response& r, size_t i, size_t batch) {
    std::vector<int32_t> ids = r.token_ids(i);
    std::string out = "{\"output_text\": " + json_string(r.text(i)) + ", \"output_ids\": [";
    for (size_t k = 0; k < ids.size(); k++) out += (k ? ", " : "") + std::to_string(ids[k]);
    out += "], \"finish_reason\": " + json_string(edgellm::finish_reason_name(r.finish_reason(i)));
    out += ", \"prompt_tokens\": " + std::to_string(r.prompt_token_count(i));
    out += ", \"generated_tokens\": " + std::to_string(ids.size());
    out += ", \"ttft_ms\": " + json_number(r.ttft_ms(i));
    out += ", \"decode_tokens_per_second\": " + json_number(r.decode_tokens_per_second(i));
    out += ", \"batch\": " + std::to_string(batch) + "}";
    return out;
}

bool read_file(const std::string& path, std::string& out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::ostringstream ss;
    ss << f.rdbuf();
    out = ss.str();
    return true;
}

int fail(const char* what, const edgellm::Status& st) {
    std::fprintf(stderr, "error: %s: %s (%s)\n", what, st.message().c_str(), edgellm_status_string(st.code()));
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (!parse_args(argc, argv, o)) {
        usage(argv[0]);
        return 2;
    }

    edgellm_runtime_params params = edgellm_runtime_default_params();
    params.threads = o.threads;
    params.context_length = o.context;
    auto t_load = std::chrono::steady_clock::now();
    auto created = edgellm::Runtime::create(o.model, &params);
    if (!created) return fail("loading the model", created.status());
    const edgellm::Runtime rt = std::move(created.value());
    double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count();
    std::fprintf(stderr, "loaded %s (%s) in %.0f ms\n", o.model.c_str(), rt.architecture().c_str(), load_ms);

    // Build the list of requests: one from the command line, or one per batch of the input
    // file, each covering `batch_size` consecutive entries (the last batch may be shorter).
    std::vector<edgellm::Request> requests;
    std::vector<size_t> first_entry;  // index of each request's first input entry
    size_t batch_size = 1;
    if (!o.input.empty()) {
        std::string json;
        if (!read_file(o.input, json)) {
            std::fprintf(stderr, "error: cannot read %s\n", o.input.c_str());
            return 1;
        }
        auto count = edgellm::Request::count_json(json);
        if (!count) return fail(o.input.c_str(), count.status());
        auto batch = edgellm::Request::batch_size_json(json);
        if (!batch) return fail(o.input.c_str(), batch.status());
        batch_size = batch.value();
        for (size_t first = 0; first < count.value(); first += batch_size) {
            size_t n = std::min(batch_size, count.value() - first);
            auto req = edgellm::Request::from_json_range(json, first, n);
            if (!req) return fail(o.input.c_str(), req.status());
            requests.push_back(std::move(req.value()));
            first_entry.push_back(first);
        }
    } else {
        edgellm::Request req;
        std::vector<edgellm::Message> messages;
        if (!o.system.empty()) messages.push_back({"system", o.system});
        messages.push_back({"user", o.prompt});
        edgellm_sampling_params sp = edgellm_sampling_default_params();
        sp.temperature = o.temperature;
        sp.top_k = o.top_k;
        sp.top_p = o.top_p;
        sp.seed = o.seed;
        edgellm::Status st = req.add_messages(messages);
        if (st) st = req.set_sampling(sp);
        if (st) st = req.set_max_generate_length(o.max_tokens);
        if (st) st = req.set_template_style(o.template_style);
        if (!st) return fail("building the request", st);
        requests.push_back(std::move(req));
        first_entry.push_back(0);
    }

    std::string results;
    size_t entries = 0;
    auto t_all = std::chrono::steady_clock::now();
    for (size_t b = 0; b < requests.size(); b++) {
        if (o.stream) {
            requests[b].set_stream([](size_t, int32_t, std::string_view piece) {
                std::fwrite(piece.data(), 1, piece.size(), stdout);
                std::fflush(stdout);
                return true;
            });
        }
        auto resp = rt.handle(requests[b]);
        if (!resp) return fail("generation", resp.status());
        const edgellm::Response& r = resp.value();
        for (size_t k = 0; k < r.count(); k++) {
            if (o.stream) {
                std::printf("\n");
                std::fflush(stdout);
            } else {
                std::printf("%s\n", r.text(k).c_str());
            }
            std::fprintf(stderr,
                         "[request %zu, batch %zu] %zu prompt + %zu generated tokens, finish %s, ttft %.1f ms, %.1f tok/s\n",
                         first_entry[b] + k, b, r.prompt_token_count(k), r.token_ids(k).size(),
                         edgellm::finish_reason_name(r.finish_reason(k)), r.ttft_ms(k), r.decode_tokens_per_second(k));
            results += std::string(entries++ ? ",\n    " : "\n    ") + response_json(r, k, b);
        }
    }
    double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_all).count();

    if (!o.output.empty()) {
        std::ofstream f(o.output, std::ios::binary);
        f << "{\n  \"model\": " << json_string(o.model) << ",\n  \"architecture\": " << json_string(rt.architecture())
          << ",\n  \"batch_size\": " << batch_size << ",\n  \"load_ms\": " << json_number(load_ms)
          << ",\n  \"total_ms\": " << json_number(total_ms)
          << ",\n  \"responses\": [" << results << "\n  ]\n}\n";
        if (!f) {
            std::fprintf(stderr, "error: cannot write %s\n", o.output.c_str());
            return 1;
        }
        std::fprintf(stderr, "wrote %s\n", o.output.c_str());
    }
    return 0;
}
