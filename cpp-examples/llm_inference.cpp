// llm_inference: run a model on one prompt, on a JSON file of requests, or on a JSONL file of
// requests served concurrently, in the manner of TensorRT Edge-LLM's example of the same name,
// using the C++ wrapper of libedgellm.
//
//   llm_inference --model M.gguf --prompt "Hello" [--system TEXT] [--max-tokens N]
//                 [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stream]
//                 [--lora NAME=DIR]... [--lora-name NAME]
//   llm_inference --model M.gguf --input requests.json --output out.json [--stream]
//   llm_inference --model M.gguf --input requests.jsonl [--config defaults.json] [--jobs N]
//                 [--output out.jsonl]
//   any mode: [--profile-output-file profile.json] [--load-prefix-cache F] [--save-prefix-cache F]
//
// The JSON input uses TensorRT Edge-LLM's format; the library parses the requests:
//   {"batch_size": 2, "temperature": 1.0, "top_p": 1.0, "top_k": 50, "max_generate_length": 128,
//    "apply_chat_template": true, "available_lora_weights": {"name": "adapter/dir", ...},
//    "requests": [{"messages": [{"role": "user", "content": "..."}], "stop": ["..."],
//                  "lora_name": "name", "save_system_prompt_kv_cache": true}, ...]}
// Top-level fields are defaults for every entry (entries may also set our other fields, see
// edgellm_request_from_json). This program handles two fields itself and removes them before the
// library sees the text: "available_lora_weights" (top level: adapter name -> PEFT directory,
// relative to the input file's directory, each loaded before serving) and
// "save_system_prompt_kv_cache" (per entry, or top level as the default: the entry's system
// message is cached with the entry's adapter before any request runs, once per distinct system
// prompt and adapter; later prompts that start with it reuse its KV blocks).
// Consecutive runs of batch_size entries are handled as one generation request with several
// prompts (edgellm_request_from_json_range); the entries of one batch must agree on sampling,
// limits, stop strings and template settings.
// The output file has one flat entry per input request, in input order:
//   {"responses": [{"output_text": ..., "output_ids": [...], "finish_reason": "eos|length|stop|
//    cancelled|error", "prompt_tokens": N, "cached_prompt_tokens": N, "generated_tokens": N,
//    "ttft_ms": T, "decode_tokens_per_second": R, "batch": B}, ...], "model": ..., ...}
//
// JSONL mode (--jsonl, or an input file ending in .jsonl): every non-blank input line is one
// request object (the fields of one "requests" entry); the top-level fields of a JSON file
// (defaults, available_lora_weights, save_system_prompt_kv_cache) come from --config FILE.json.
// The lines run concurrently on --jobs threads (default: the runtime's max_batch), so that the
// runtime's continuous batching serves them together; every output line is one response object as
// above ("batch" = the request's 0-based line index among the non-blank lines), written in input
// order to --output or stdout. A line that cannot be parsed or served gives an error object
// {"error": MESSAGE, "status": STATUS, "batch": B} on its output line and the job goes on.
#include "edgellm.hpp"
#include "mini_json.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using mini_json::quote;

struct Options {
    std::string model, prompt, system, input, output, template_style, config;
    std::string profile_output, load_prefix_cache, save_prefix_cache;
    std::vector<std::pair<std::string, std::string>> loras;  // --lora NAME=DIR
    std::optional<std::string> lora_name;
    size_t max_tokens = 128;
    float temperature = 0.0f;
    unsigned top_k = 0;
    float top_p = 1.0f;
    unsigned long long seed = 0;
    unsigned threads = 0;
    unsigned context = 0;
    unsigned max_batch = 0;
    size_t jobs = 0;
    bool stream = false;
    bool jsonl = false;
};

void usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s --model PATH (--prompt TEXT | --input FILE.json | --input FILE.jsonl) [options]\n"
                 "  --system TEXT             system message for --prompt\n"
                 "  --max-tokens N            tokens to generate (default 128)\n"
                 "  --temperature T           0 = greedy (default)\n"
                 "  --top-k K, --top-p P      sampling filters\n"
                 "  --seed S                  random seed\n"
                 "  --template-style NAME     built-in chat template instead of the model's\n"
                 "  --threads N               CPU threads (default: all cores)\n"
                 "  --context N               context window (default: the model's)\n"
                 "  --max-batch N             sequences decoded together (default: the library's)\n"
                 "  --stream                  print tokens as they are generated (not with JSONL)\n"
                 "  --output FILE             write results as JSON (JSONL mode: one line per request;\n"
                 "                            default stdout)\n"
                 "  --lora NAME=DIR           load a PEFT LoRA adapter directory (repeatable)\n"
                 "  --lora-name NAME          adapter of the --prompt request; with --input, the\n"
                 "                            default adapter of entries that name none\n"
                 "  --jsonl                   read the input as JSONL (implied by a .jsonl name): one\n"
                 "                            request object per line, served concurrently\n"
                 "  --config FILE.json        JSONL mode: top-level fields (defaults,\n"
                 "                            available_lora_weights, save_system_prompt_kv_cache)\n"
                 "  --jobs N                  JSONL mode: concurrent requests (default: max batch)\n"
                 "  --profile-output-file F   write per-request timings and runtime metrics as JSON\n"
                 "  --load-prefix-cache F     load a saved prefix cache before serving\n"
                 "  --save-prefix-cache F     save the prefix cache after serving\n"
                 "With --input, sampling and limits come from the file, not from the options.\n"
                 "Input files may carry TensorRT Edge-LLM's \"available_lora_weights\" (top level:\n"
                 "{name: adapter dir relative to the file}), \"lora_name\" and\n"
                 "\"save_system_prompt_kv_cache\" (per request, or top level for all: cache the\n"
                 "request's system message, with its adapter, before serving).\n",
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

// True when `s` ends with `suffix`.
bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Adds the adapter of a `--lora NAME=DIR` value to `o.loras`; false when it is malformed.
bool parse_lora(const char* v, Options& o) {
    std::string s = v;
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) return false;
    o.loras.emplace_back(s.substr(0, eq), s.substr(eq + 1));
    return true;
}

// Reads the command line into `o`; false (after a message) on bad or conflicting options.
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
        else if (a == "--jsonl") o.jsonl = true;
        else if (a == "--model") ok = value(v) && (o.model = v, true);
        else if (a == "--prompt") ok = value(v) && (o.prompt = v, true);
        else if (a == "--system") ok = value(v) && (o.system = v, true);
        else if (a == "--input") ok = value(v) && (o.input = v, true);
        else if (a == "--output") ok = value(v) && (o.output = v, true);
        else if (a == "--config") ok = value(v) && (o.config = v, true);
        else if (a == "--template-style") ok = value(v) && (o.template_style = v, true);
        else if (a == "--profile-output-file") ok = value(v) && (o.profile_output = v, true);
        else if (a == "--load-prefix-cache") ok = value(v) && (o.load_prefix_cache = v, true);
        else if (a == "--save-prefix-cache") ok = value(v) && (o.save_prefix_cache = v, true);
        else if (a == "--lora") ok = value(v) && parse_lora(v, o);
        else if (a == "--lora-name") ok = value(v) && (o.lora_name = std::string(v), true);
        else if (a == "--max-tokens") ok = value(v) && parse_number(v, o.max_tokens);
        else if (a == "--temperature") ok = value(v) && parse_number(v, o.temperature);
        else if (a == "--top-k") ok = value(v) && parse_number(v, o.top_k);
        else if (a == "--top-p") ok = value(v) && parse_number(v, o.top_p);
        else if (a == "--seed") ok = value(v) && parse_number(v, o.seed);
        else if (a == "--threads") ok = value(v) && parse_number(v, o.threads);
        else if (a == "--context") ok = value(v) && parse_number(v, o.context);
        else if (a == "--max-batch") ok = value(v) && parse_number(v, o.max_batch);
        else if (a == "--jobs") ok = value(v) && parse_number(v, o.jobs) && o.jobs > 0;
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
    if (!o.input.empty() && ends_with(o.input, ".jsonl")) o.jsonl = true;
    if (o.jsonl && o.input.empty()) {
        std::fprintf(stderr, "--jsonl needs --input\n");
        return false;
    }
    if (o.jsonl && o.stream) {
        std::fprintf(stderr, "--stream cannot be used in JSONL mode (requests run concurrently)\n");
        return false;
    }
    if (!o.jsonl && (!o.config.empty() || o.jobs != 0)) {
        std::fprintf(stderr, "--config and --jobs are for JSONL mode\n");
        return false;
    }
    return true;
}

// A JSON number with three decimals, or null when `v` is not finite.
std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

// A JSON string, or null for nullopt.
std::string json_opt_string(const std::optional<std::string>& s) { return s ? quote(*s) : "null"; }

// Output `i` of a response as one entry of the output file's "responses" array.
std::string response_json(const edgellm::Response& r, size_t i, size_t batch) {
    std::vector<int32_t> ids = r.token_ids(i);
    std::string out = "{\"output_text\": " + quote(r.text(i)) + ", \"output_ids\": [";
    for (size_t k = 0; k < ids.size(); k++) out += (k ? ", " : "") + std::to_string(ids[k]);
    out += "], \"finish_reason\": " + quote(edgellm::finish_reason_name(r.finish_reason(i)));
    out += ", \"prompt_tokens\": " + std::to_string(r.prompt_token_count(i));
    out += ", \"cached_prompt_tokens\": " + std::to_string(r.cached_prompt_tokens(i));
    out += ", \"generated_tokens\": " + std::to_string(ids.size());
    out += ", \"ttft_ms\": " + json_number(r.ttft_ms(i));
    out += ", \"decode_tokens_per_second\": " + json_number(r.decode_tokens_per_second(i));
    out += ", \"batch\": " + std::to_string(batch) + "}";
    return out;
}

// The error object standing for a request that failed, as one output entry.
std::string error_json(const std::string& message, const std::string& status, size_t batch) {
    return "{\"error\": " + quote(message) + ", \"status\": " + quote(status) + ", \"batch\": " +
           std::to_string(batch) + "}";
}

// Reads the whole file at `path` into `out`; false when it cannot be read.
bool read_file(const std::string& path, std::string& out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::ostringstream ss;
    ss << f.rdbuf();
    out = ss.str();
    return true;
}

// The directory part of `path` ("." when it has none), for paths given relative to a file.
std::string dir_of(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// `path` relative to `base_dir` unless it is absolute.
std::string resolve(const std::string& base_dir, const std::string& path) {
    if (path.empty() || path[0] == '/') return path;
    return base_dir + "/" + path;
}

// Reports a failed library call on stderr; returns the exit status 1.
int fail(const char* what, const edgellm::Status& st) {
    std::fprintf(stderr, "error: %s: %s (%s)\n", what, st.message().c_str(), edgellm_status_string(st.code()));
    return 1;
}

// Reports an error of this program on stderr; returns the exit status 1.
int fail_msg(const std::string& what) {
    std::fprintf(stderr, "error: %s\n", what.c_str());
    return 1;
}

// One request's numbers for the profile (or the error that ended it).
struct ProfileRecord {
    size_t index = 0;  // input entry (JSON), non-blank line (JSONL) or 0 (--prompt)
    size_t batch = 0;
    std::optional<std::string> lora_name;  // nullopt: the runtime's default adapter
    std::string error;                     // empty on success
    size_t prompt_tokens = 0, cached_prompt_tokens = 0, output_tokens = 0;
    double ttft_ms = 0.0, decode_tps = 0.0;
    std::string finish_reason;
};

// The profile record of output `i` of a response.
ProfileRecord profile_record(const edgellm::Response& r, size_t i, size_t index, size_t batch,
                             const std::optional<std::string>& lora) {
    ProfileRecord p;
    p.index = index;
    p.batch = batch;
    p.lora_name = lora;
    p.prompt_tokens = r.prompt_token_count(i);
    p.cached_prompt_tokens = r.cached_prompt_tokens(i);
    p.output_tokens = r.token_ids(i).size();
    p.ttft_ms = r.ttft_ms(i);
    p.decode_tps = r.decode_tokens_per_second(i);
    p.finish_reason = edgellm::finish_reason_name(r.finish_reason(i));
    return p;
}

// One system prompt to cache before serving (save_system_prompt_kv_cache), and its result.
struct SystemCache {
    std::string system_prompt;
    std::optional<std::string> lora_name;
    size_t cached_tokens = 0;
    std::string error;
    bool operator<(const SystemCache& o) const {
        return std::tie(system_prompt, lora_name) < std::tie(o.system_prompt, o.lora_name);
    }
};

// The fields of one request this program reads before the library parses it.
struct EntryInfo {
    bool save_system_prompt = false;
    std::optional<std::string> system_prompt;  // content of the first "system" message
    std::optional<std::string> lora_name;
};

// Reads `save_system_prompt_kv_cache` (removed from `entry`), the system message and the
// adapter name of a request object, with `defaults` (the top-level object, or nullptr) filling
// what the entry leaves out. Returns false with a message for a flag that is not a boolean.
bool entry_info(mini_json::Value& entry, const mini_json::Value* defaults, bool default_save, EntryInfo& info,
                std::string& error) {
    info = EntryInfo();
    info.save_system_prompt = default_save;
    mini_json::Value flag;
    if (entry.take("save_system_prompt_kv_cache", flag)) {
        if (flag.kind != mini_json::Value::Kind::Bool) {
            error = "\"save_system_prompt_kv_cache\" must be true or false";
            return false;
        }
        info.save_system_prompt = flag.boolean;
    }
    auto field = [&](const char* key) -> const mini_json::Value* {
        const mini_json::Value* v = entry.find(key);
        return v ? v : (defaults ? defaults->find(key) : nullptr);
    };
    if (const mini_json::Value* lora = field("lora_name"); lora && lora->is_string()) info.lora_name = lora->text;
    if (const mini_json::Value* messages = field("messages"); messages && messages->kind == mini_json::Value::Kind::Array) {
        for (const mini_json::Value& m : messages->items) {
            const mini_json::Value* role = m.is_object() ? m.find("role") : nullptr;
            const mini_json::Value* content = m.is_object() ? m.find("content") : nullptr;
            if (role && role->is_string() && role->text == "system" && content && content->is_string()) {
                info.system_prompt = content->text;
                break;
            }
        }
    }
    return true;
}

// Takes "available_lora_weights" out of a top-level object into `out` (name, resolved path).
bool take_lora_weights(mini_json::Value& top, const std::string& base_dir,
                       std::vector<std::pair<std::string, std::string>>& out, std::string& error) {
    mini_json::Value weights;
    if (!top.take("available_lora_weights", weights)) return true;
    if (!weights.is_object()) {
        error = "\"available_lora_weights\" must be an object mapping adapter names to directories";
        return false;
    }
    for (const auto& [name, path] : weights.members) {
        if (!path.is_string() || name.empty()) {
            error = "\"available_lora_weights\": the adapter \"" + name + "\" needs a directory path string";
            return false;
        }
        out.emplace_back(name, resolve(base_dir, path.text));
    }
    return true;
}

// Top-level "save_system_prompt_kv_cache" of a file (removed from `top`).
bool take_default_save(mini_json::Value& top, bool& out, std::string& error) {
    mini_json::Value flag;
    out = false;
    if (!top.take("save_system_prompt_kv_cache", flag)) return true;
    if (flag.kind != mini_json::Value::Kind::Bool) {
        error = "\"save_system_prompt_kv_cache\" must be true or false";
        return false;
    }
    out = flag.boolean;
    return true;
}

// Everything the run collects for the output and the profile.
struct Run {
    std::vector<ProfileRecord> records;
    std::vector<SystemCache> caches;
    std::optional<size_t> loaded_blocks, saved_blocks;
    std::string mode;
    size_t jobs = 1;
    uint32_t max_batch = 0;  // of the runtime's parameters
};

// Caches every distinct (system prompt, adapter) in `wanted`; failures are recorded, not fatal.
void cache_system_prompts(const edgellm::Runtime& rt, const std::set<SystemCache>& wanted, Run& run) {
    for (SystemCache c : wanted) {
        auto n = rt.cache_system_prompt(c.system_prompt, c.lora_name);
        if (n) {
            c.cached_tokens = n.value();
            std::fprintf(stderr, "cached a system prompt of %zu bytes (adapter %s): %zu tokens\n", c.system_prompt.size(),
                         c.lora_name ? c.lora_name->c_str() : "default", c.cached_tokens);
        } else {
            c.error = n.status().message();
            std::fprintf(stderr, "warning: caching a system prompt failed: %s\n", c.error.c_str());
        }
        run.caches.push_back(std::move(c));
    }
}

// Loads the adapters of a file's "available_lora_weights"; with --lora-name, makes that adapter
// the default of the file's requests that name none.
int load_file_adapters(const Options& o, const edgellm::Runtime& rt,
                       const std::vector<std::pair<std::string, std::string>>& adapters) {
    for (const auto& [name, dir] : adapters) {
        edgellm::Status st = rt.load_lora(name, dir);
        if (!st) return fail(("loading LoRA adapter " + name + " from " + dir).c_str(), st);
        std::fprintf(stderr, "loaded LoRA adapter %s from %s\n", name.c_str(), dir.c_str());
    }
    if (o.lora_name) {
        edgellm::Status st = rt.switch_lora(*o.lora_name);
        if (!st) return fail(("making " + *o.lora_name + " the default adapter").c_str(), st);
    }
    return 0;
}

// Result of one JSONL line: its output line and its profile record.
struct LineResult {
    std::string json;
    ProfileRecord record;
};

// A JSONL line ready to run: its request, or the error that stops it.
struct LineJob {
    std::optional<edgellm::Request> request;
    std::string error, status;
    std::optional<std::string> lora_name;
};

// Runs JSONL input: parses every non-blank line, caches the flagged system prompts, serves the
// lines on `jobs` threads and writes each response line, in input order, as soon as it and all
// lines before it are done.
int run_jsonl(const Options& o, const edgellm::Runtime& rt, size_t default_jobs, Run& run) {
    run.mode = "jsonl";
    mini_json::Value config;
    config.kind = mini_json::Value::Kind::Object;
    bool default_save = false;
    std::vector<std::pair<std::string, std::string>> adapters;
    if (!o.config.empty()) {
        std::string text, error;
        if (!read_file(o.config, text)) return fail_msg("cannot read " + o.config);
        if (!mini_json::parse(text, config, error)) return fail_msg(o.config + ": invalid JSON: " + error);
        if (!config.is_object()) return fail_msg(o.config + ": must be a JSON object");
        if (config.find("requests")) return fail_msg(o.config + ": the requests of JSONL mode are the input lines, not \"requests\"");
        mini_json::Value ignored;
        config.take("batch_size", ignored);  // every line is its own request
        if (!take_lora_weights(config, dir_of(o.config), adapters, error) || !take_default_save(config, default_save, error))
            return fail_msg(o.config + ": " + error);
    }
    if (int rc = load_file_adapters(o, rt, adapters); rc != 0) return rc;

    std::ifstream in(o.input, std::ios::binary);
    if (!in) return fail_msg("cannot read " + o.input);
    std::vector<LineJob> jobs;
    std::vector<std::optional<SystemCache>> cache_of;  // the system prompt each line asked to cache
    std::set<SystemCache> wanted;
    std::string line;
    while (std::getline(in, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        LineJob job;
        std::optional<SystemCache> cache;
        mini_json::Value entry;
        std::string error;
        EntryInfo info;
        if (!mini_json::parse(line, entry, error)) {
            job.error = "invalid JSON: " + error;
        } else if (!entry.is_object()) {
            job.error = "a JSONL line must be a request object";
        } else if (entry.find("available_lora_weights")) {
            job.error = "\"available_lora_weights\" belongs in the --config file, not on a request line";
        } else if (!entry_info(entry, &config, default_save, info, error)) {
            job.error = error;
        } else {
            mini_json::Value wrapped = config;
            mini_json::Value requests;
            requests.kind = mini_json::Value::Kind::Array;
            requests.items.push_back(std::move(entry));
            wrapped.members.emplace_back("requests", std::move(requests));
            auto req = edgellm::Request::from_json(mini_json::write(wrapped), 0);
            if (req) {
                job.request = std::move(req.value());
                job.lora_name = info.lora_name ? info.lora_name : o.lora_name;
                if (info.save_system_prompt && info.system_prompt) {
                    cache = SystemCache{*info.system_prompt, job.lora_name, 0, {}};
                    wanted.insert(*cache);
                }
            } else {
                job.error = req.status().message();
                job.status = edgellm_status_string(req.status().code());
            }
        }
        if (!job.error.empty() && job.status.empty()) job.status = edgellm_status_string(EDGELLM_ERR_INVALID_ARGUMENT);
        jobs.push_back(std::move(job));
        cache_of.push_back(std::move(cache));
    }
    if (in.bad()) return fail_msg("error reading " + o.input);

    cache_system_prompts(rt, wanted, run);
    for (size_t i = 0; i < jobs.size(); i++) {
        if (!cache_of[i] || !jobs[i].error.empty()) continue;
        auto it = std::find_if(run.caches.begin(), run.caches.end(), [&](const SystemCache& c) {
            return c.system_prompt == cache_of[i]->system_prompt && c.lora_name == cache_of[i]->lora_name;
        });
        if (it != run.caches.end() && !it->error.empty()) {
            jobs[i].error = "caching the system prompt failed: " + it->error;
            jobs[i].status = edgellm_status_string(EDGELLM_ERR_INVALID_ARGUMENT);
            jobs[i].request.reset();
        }
    }

    std::FILE* out = stdout;
    if (!o.output.empty()) {
        out = std::fopen(o.output.c_str(), "wb");
        if (!out) return fail_msg("cannot write " + o.output);
    }
    size_t n_threads = std::max<size_t>(1, std::min(o.jobs ? o.jobs : default_jobs, std::max<size_t>(jobs.size(), 1)));
    run.jobs = n_threads;
    std::vector<std::optional<LineResult>> results(jobs.size());
    std::mutex mu;
    std::condition_variable done;
    std::atomic<size_t> next{0};
    auto worker = [&]() {
        for (size_t i = next++; i < jobs.size(); i = next++) {
            LineJob& job = jobs[i];
            LineResult res;
            if (job.request) {
                auto resp = rt.handle(*job.request);
                if (resp) {
                    res.json = response_json(resp.value(), 0, i);
                    res.record = profile_record(resp.value(), 0, i, i, job.lora_name);
                } else {
                    job.error = resp.status().message();
                    job.status = edgellm_status_string(resp.status().code());
                }
            }
            if (!job.error.empty()) {
                res.json = error_json(job.error, job.status, i);
                res.record.index = res.record.batch = i;
                res.record.lora_name = job.lora_name;
                res.record.error = job.error;
                std::fprintf(stderr, "[request %zu] error: %s\n", i, job.error.c_str());
            }
            job.request.reset();
            std::lock_guard<std::mutex> lock(mu);
            results[i] = std::move(res);
            done.notify_one();
        }
    };
    std::vector<std::thread> pool;
    for (size_t t = 0; t < n_threads; t++) pool.emplace_back(worker);
    bool write_ok = true;
    for (size_t i = 0; i < results.size(); i++) {
        std::unique_lock<std::mutex> lock(mu);
        done.wait(lock, [&] { return results[i].has_value(); });
        LineResult res = std::move(*results[i]);
        lock.unlock();
        write_ok = write_ok && std::fprintf(out, "%s\n", res.json.c_str()) >= 0 && std::fflush(out) == 0;
        run.records.push_back(std::move(res.record));
    }
    for (std::thread& t : pool) t.join();
    if (out != stdout) write_ok = std::fclose(out) == 0 && write_ok;
    if (!write_ok) return fail_msg("cannot write " + (o.output.empty() ? std::string("stdout") : o.output));
    size_t errors = std::count_if(run.records.begin(), run.records.end(), [](const ProfileRecord& r) { return !r.error.empty(); });
    std::fprintf(stderr, "served %zu requests on %zu threads (%zu errors)%s%s\n", results.size(), n_threads, errors,
                 o.output.empty() ? "" : ", wrote ", o.output.c_str());
    return 0;
}

// Runs a JSON request file (or one --prompt) batch by batch, as before JSONL mode existed.
int run_batches(const Options& o, const edgellm::Runtime& rt, double load_ms, Run& run) {
    // Build the list of requests: one from the command line, or one per batch of the input
    // file, each covering `batch_size` consecutive entries (the last batch may be shorter).
    std::vector<edgellm::Request> requests;
    std::vector<size_t> first_entry;                  // index of each request's first input entry
    std::vector<std::optional<std::string>> entry_lora;  // adapter of every entry
    size_t batch_size = 1;
    if (!o.input.empty()) {
        run.mode = "json";
        std::string text, error;
        if (!read_file(o.input, text)) return fail_msg("cannot read " + o.input);
        mini_json::Value top;
        if (!mini_json::parse(text, top, error)) return fail_msg(o.input + ": invalid JSON: " + error);
        if (!top.is_object()) return fail_msg(o.input + ": must be a JSON object");
        std::vector<std::pair<std::string, std::string>> adapters;
        bool default_save = false;
        if (!take_lora_weights(top, dir_of(o.input), adapters, error) || !take_default_save(top, default_save, error))
            return fail_msg(o.input + ": " + error);
        if (int rc = load_file_adapters(o, rt, adapters); rc != 0) return rc;
        // The entries: the "requests" array, or the object itself when it is one request.
        std::set<SystemCache> wanted;
        auto visit = [&](mini_json::Value& entry, const mini_json::Value* defaults) {
            EntryInfo info;
            if (!entry_info(entry, defaults, default_save, info, error)) return false;
            std::optional<std::string> lora = info.lora_name ? info.lora_name : o.lora_name;
            entry_lora.push_back(lora);
            if (info.save_system_prompt && info.system_prompt) wanted.insert(SystemCache{*info.system_prompt, lora, 0, {}});
            return true;
        };
        mini_json::Value entries;
        if (top.take("requests", entries)) {
            if (entries.kind == mini_json::Value::Kind::Array) {
                for (size_t i = 0; i < entries.items.size(); i++) {
                    if (entries.items[i].is_object() && !visit(entries.items[i], &top))
                        return fail_msg(o.input + ": requests[" + std::to_string(i) + "]: " + error);
                    if (!entries.items[i].is_object()) entry_lora.push_back(std::nullopt);
                }
            }
            top.members.emplace_back("requests", std::move(entries));
        } else if (!visit(top, nullptr)) {
            return fail_msg(o.input + ": " + error);
        }
        std::string json = mini_json::write(top);
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
        cache_system_prompts(rt, wanted, run);
        for (const SystemCache& c : run.caches)
            if (!c.error.empty()) return fail_msg("caching a system prompt: " + c.error);
    } else {
        run.mode = "prompt";
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
        if (st && o.lora_name) st = req.set_lora(o.lora_name);
        if (!st) return fail("building the request", st);
        requests.push_back(std::move(req));
        first_entry.push_back(0);
        entry_lora.push_back(o.lora_name);
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
            size_t entry = first_entry[b] + k;
            if (o.stream) {
                std::printf("\n");
                std::fflush(stdout);
            } else {
                std::printf("%s\n", r.text(k).c_str());
            }
            std::fprintf(stderr,
                         "[request %zu, batch %zu] %zu prompt (%zu cached) + %zu generated tokens, finish %s, ttft %.1f ms, "
                         "%.1f tok/s\n",
                         entry, b, r.prompt_token_count(k), r.cached_prompt_tokens(k), r.token_ids(k).size(),
                         edgellm::finish_reason_name(r.finish_reason(k)), r.ttft_ms(k), r.decode_tokens_per_second(k));
            results += std::string(entries++ ? ",\n    " : "\n    ") + response_json(r, k, b);
            run.records.push_back(
                profile_record(r, k, entry, b, entry < entry_lora.size() ? entry_lora[entry] : std::nullopt));
        }
    }
    double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_all).count();

    if (!o.output.empty()) {
        std::ofstream f(o.output, std::ios::binary);
        f << "{\n  \"model\": " << quote(o.model) << ",\n  \"architecture\": " << quote(rt.architecture())
          << ",\n  \"batch_size\": " << batch_size << ",\n  \"load_ms\": " << json_number(load_ms)
          << ",\n  \"total_ms\": " << json_number(total_ms) << ",\n  \"responses\": [" << results << "\n  ]\n}\n";
        if (!f) return fail_msg("cannot write " + o.output);
        std::fprintf(stderr, "wrote %s\n", o.output.c_str());
    }
    return 0;
}

// The --profile-output-file document: per-request timings, the system prompts cached, totals,
// and every field of edgellm_runtime_metrics at the end of the run.
std::string profile_json(const Options& o, const edgellm::Runtime& rt, const Run& run, double load_ms, double total_ms,
                         const edgellm_runtime_metrics& m) {
    std::string s = "{\n  \"model\": " + quote(o.model) + ",\n  \"architecture\": " + quote(rt.architecture()) +
                    ",\n  \"mode\": " + quote(run.mode) + ",\n  \"jobs\": " + std::to_string(run.jobs) +
                    ",\n  \"max_batch\": " + std::to_string(run.max_batch) +
                    ",\n  \"load_ms\": " + json_number(load_ms) + ",\n  \"total_ms\": " + json_number(total_ms) +
                    ",\n  \"requests\": [";
    size_t ok = 0, output_tokens = 0;
    double ttft_sum = 0.0, tpot_sum = 0.0;
    size_t tpot_n = 0;
    for (size_t i = 0; i < run.records.size(); i++) {
        const ProfileRecord& p = run.records[i];
        s += std::string(i ? ",\n    " : "\n    ") + "{\"index\": " + std::to_string(p.index) +
             ", \"batch\": " + std::to_string(p.batch) + ", \"lora_name\": " + json_opt_string(p.lora_name);
        if (!p.error.empty()) {
            s += ", \"error\": " + quote(p.error) + "}";
            continue;
        }
        // Time per output token after the first: the inverse of the decode speed.
        double tpot = p.decode_tps > 0.0 ? 1000.0 / p.decode_tps : NAN;
        s += ", \"prompt_tokens\": " + std::to_string(p.prompt_tokens) +
             ", \"cached_prompt_tokens\": " + std::to_string(p.cached_prompt_tokens) +
             ", \"output_tokens\": " + std::to_string(p.output_tokens) + ", \"ttft_ms\": " + json_number(p.ttft_ms) +
             ", \"time_per_output_token_ms\": " + json_number(tpot) +
             ", \"decode_tokens_per_second\": " + json_number(p.decode_tps) +
             ", \"finish_reason\": " + quote(p.finish_reason) + "}";
        ok++;
        output_tokens += p.output_tokens;
        ttft_sum += p.ttft_ms;
        if (std::isfinite(tpot)) {
            tpot_sum += tpot;
            tpot_n++;
        }
    }
    s += "\n  ],\n  \"system_prompt_cache\": [";
    for (size_t i = 0; i < run.caches.size(); i++) {
        const SystemCache& c = run.caches[i];
        s += std::string(i ? ",\n    " : "\n    ") + "{\"system_prompt\": " + quote(c.system_prompt) +
             ", \"lora_name\": " + json_opt_string(c.lora_name) + ", \"cached_tokens\": " + std::to_string(c.cached_tokens) +
             (c.error.empty() ? "" : ", \"error\": " + quote(c.error)) + "}";
    }
    auto opt = [](const std::optional<size_t>& v) { return v ? std::to_string(*v) : std::string("null"); };
    s += "\n  ],\n  \"prefix_cache_file\": {\"loaded_blocks\": " + opt(run.loaded_blocks) +
         ", \"saved_blocks\": " + opt(run.saved_blocks) + "}";
    s += ",\n  \"summary\": {\"requests\": " + std::to_string(run.records.size()) +
         ", \"errors\": " + std::to_string(run.records.size() - ok) + ", \"output_tokens\": " + std::to_string(output_tokens) +
         ", \"mean_ttft_ms\": " + json_number(ok ? ttft_sum / double(ok) : NAN) +
         ", \"mean_time_per_output_token_ms\": " + json_number(tpot_n ? tpot_sum / double(tpot_n) : NAN) +
         ", \"output_tokens_per_second\": " + json_number(total_ms > 0.0 ? 1000.0 * double(output_tokens) / total_ms : NAN) +
         "}";
    auto u = [](uint64_t v) { return std::to_string(v); };
    s += ",\n  \"runtime_metrics\": {\"kv_total_blocks\": " + u(m.kv_total_blocks) +
         ", \"kv_used_blocks\": " + u(m.kv_used_blocks) + ", \"kv_cached_blocks\": " + u(m.kv_cached_blocks) +
         ", \"weight_bytes\": " + u(m.weight_bytes) + ", \"kv_total_bytes\": " + u(m.kv_total_bytes) +
         ", \"kv_used_bytes\": " + u(m.kv_used_bytes) + ", \"lora_bytes\": " + u(m.lora_bytes) +
         ", \"sequences\": " + u(m.sequences) + ", \"generated_tokens\": " + u(m.generated_tokens) +
         ", \"prompt_tokens\": " + u(m.prompt_tokens) + ", \"reused_prompt_tokens\": " + u(m.reused_prompt_tokens) +
         ", \"cache_hits\": " + u(m.cache_hits) + ", \"cache_lookups\": " + u(m.cache_lookups) +
         ", \"steps\": " + u(m.steps) + ", \"mean_batch\": " + json_number(m.mean_batch) +
         ", \"scratch_bytes\": " + u(m.scratch_bytes) + "}\n}\n";
    return s;
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
    if (o.max_batch) params.max_batch = o.max_batch;
    auto t_load = std::chrono::steady_clock::now();
    auto created = edgellm::Runtime::create(o.model, &params);
    if (!created) return fail("loading the model", created.status());
    const edgellm::Runtime rt = std::move(created.value());
    double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count();
    std::fprintf(stderr, "loaded %s (%s) in %.0f ms\n", o.model.c_str(), rt.architecture().c_str(), load_ms);

    Run run;
    run.max_batch = params.max_batch;
    if (!o.load_prefix_cache.empty()) {
        auto blocks = rt.load_prefix_cache(o.load_prefix_cache);
        if (!blocks) return fail(("loading the prefix cache " + o.load_prefix_cache).c_str(), blocks.status());
        run.loaded_blocks = blocks.value();
        std::fprintf(stderr, "loaded %zu prefix-cache blocks from %s\n", blocks.value(), o.load_prefix_cache.c_str());
    }
    for (const auto& [name, dir] : o.loras) {
        edgellm::Status st = rt.load_lora(name, dir);
        if (!st) return fail(("loading LoRA adapter " + name + " from " + dir).c_str(), st);
        std::fprintf(stderr, "loaded LoRA adapter %s from %s\n", name.c_str(), dir.c_str());
    }

    auto t_all = std::chrono::steady_clock::now();
    int rc = o.jsonl ? run_jsonl(o, rt, std::max<uint32_t>(params.max_batch, 1), run) : run_batches(o, rt, load_ms, run);
    if (rc != 0) return rc;
    double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_all).count();

    if (!o.save_prefix_cache.empty()) {
        auto blocks = rt.save_prefix_cache(o.save_prefix_cache);
        if (!blocks) return fail(("saving the prefix cache " + o.save_prefix_cache).c_str(), blocks.status());
        run.saved_blocks = blocks.value();
        std::fprintf(stderr, "saved %zu prefix-cache blocks to %s\n", blocks.value(), o.save_prefix_cache.c_str());
    }
    if (!o.profile_output.empty()) {
        auto metrics = rt.metrics();
        if (!metrics) return fail("reading the runtime metrics", metrics.status());
        std::ofstream f(o.profile_output, std::ios::binary);
        f << profile_json(o, rt, run, load_ms, total_ms, metrics.value());
        if (!f) return fail_msg("cannot write " + o.profile_output);
        std::fprintf(stderr, "wrote the profile %s\n", o.profile_output.c_str());
    }
    return 0;
}
