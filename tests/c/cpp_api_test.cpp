// C++17 test of the RAII wrapper include/edgellm.hpp, linked against the static library:
// ownership and moves, error reporting without exceptions, streaming through std::function, and
// cancelling a request from another thread while it runs.
//
// Usage: cpp_api_test TINY_MODEL PROMPT_IDS GREEDY_IDS (see c_api_test.c for where they come from)
#include "edgellm.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_passed = 0;
int g_failed = 0;

void check(bool ok, const char* what, int line) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        std::fprintf(stderr, "cpp_api_test.cpp:%d: check failed: %s\n", line, what);
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

std::vector<int32_t> parse_ids(const std::string& text) {
    std::vector<int32_t> ids;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) ids.push_back(static_cast<int32_t>(std::stol(item)));
    return ids;
}

void test_errors_without_model() {
    auto rt = edgellm::Runtime::create("/nonexistent/model.gguf");
    CHECK(!rt.ok());
    CHECK(rt.status().code() == EDGELLM_ERR_IO);
    CHECK(rt.status().message().find("/nonexistent/model.gguf") != std::string::npos);

    edgellm::Request req;
    CHECK(req.valid());
    edgellm::Status st = req.add_text(std::string("\xff\xfe", 2));
    CHECK(st.code() == EDGELLM_ERR_INVALID_UTF8);
    CHECK(!st.message().empty());
    CHECK(req.add_text("fine").ok());

    auto parsed = edgellm::Request::from_json(R"({"prompt":"x","max_tokens":"many"})");
    CHECK(!parsed.ok());
    CHECK(parsed.status().code() == EDGELLM_ERR_INVALID_ARGUMENT);
    auto n = edgellm::Request::count_json(R"({"requests":[{"prompt":"a"},{"prompt":"b"},{"prompt":"c"}]})");
    CHECK(n.ok() && n.value() == 3);
    const char* batched = R"({"batch_size":2,"requests":[{"prompt":"a"},{"prompt":"b"},{"prompt":"c"}]})";
    auto batch = edgellm::Request::batch_size_json(batched);
    CHECK(batch.ok() && batch.value() == 2);
    CHECK(edgellm::Request::batch_size_json(R"({"prompt":"a"})").value() == 1);
    CHECK(edgellm::Request::batch_size_json(R"({"batch_size":0,"requests":[]})").status().code() ==
          EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(edgellm::Request::from_json_range(batched, 0, 2).ok());
    CHECK(edgellm::Request::from_json_range(batched, 2, 1).ok());
    CHECK(edgellm::Request::from_json_range(batched, 2, 2).status().code() == EDGELLM_ERR_INVALID_ARGUMENT);

    // Moving a request keeps its stream callback valid (the callback lives on the heap).
    edgellm::Request moved = std::move(req);
    CHECK(moved.set_stream([](size_t, int32_t, std::string_view) { return true; }).ok());
    CHECK(edgellm::version() == EDGELLM_VERSION_STRING);
}

void test_with_model(const std::string& model, const std::vector<int32_t>& prompt,
                     const std::vector<int32_t>& greedy) {
    edgellm_runtime_params params = edgellm_runtime_default_params();
    params.backend = EDGELLM_BACKEND_CPU;
    auto created = edgellm::Runtime::create(model, &params);
    CHECK(created.ok());
    if (!created.ok()) {
        std::fprintf(stderr, "runtime: %s\n", created.status().message().c_str());
        return;
    }
    const edgellm::Runtime rt = std::move(created.value());
    CHECK(rt.architecture() == "llama");
    CHECK(rt.vocab_size() > 0);

    auto text = rt.detokenize(prompt);
    CHECK(text.ok());
    auto ids = rt.tokenize(text.value(), false);
    CHECK(ids.ok() && !ids.value().empty());
    CHECK(rt.capture_cuda_graph().code() == EDGELLM_ERR_UNSUPPORTED);

    // Greedy continuation matches the transformers golden; streamed pieces add up to the text.
    {
        edgellm::Request req;
        CHECK(req.add_tokens(prompt).ok());
        CHECK(req.set_max_generate_length(greedy.size()).ok());
        CHECK(req.set_ignore_eos(true).ok());
        std::string streamed;
        CHECK(req.set_stream([&](size_t, int32_t, std::string_view piece) {
                     streamed.append(piece);
                     return true;
                 }).ok());
        auto resp = rt.handle(req);
        CHECK(resp.ok());
        if (resp.ok()) {
            CHECK(resp.value().count() == 1);
            CHECK(resp.value().token_ids(0) == greedy);
            CHECK(resp.value().text(0) == streamed);
            CHECK(resp.value().finish_reason(0) == EDGELLM_FINISH_LENGTH);
            CHECK(std::string(edgellm::finish_reason_name(resp.value().finish_reason(0))) == "length");
        }
    }

    // One runtime serves several threads at once; each gets the same greedy answer.
    {
        std::vector<std::vector<int32_t>> got(3);
        std::vector<std::thread> workers;
        for (size_t t = 0; t < got.size(); t++) {
            workers.emplace_back([&, t] {
                edgellm::Request req;
                if (!req.add_tokens(prompt) || !req.set_max_generate_length(greedy.size()) || !req.set_ignore_eos(true))
                    return;
                auto resp = rt.handle(req);
                if (resp) got[t] = resp.value().token_ids(0);
            });
        }
        for (std::thread& w : workers) w.join();
        for (const auto& ids : got) CHECK(ids == greedy);
    }

    // Cancel from another thread: the worker streams until the main thread cancels.
    {
        size_t ctx = rt.context_length();
        size_t budget = ctx > prompt.size() + 8 ? ctx - prompt.size() : 8;
        edgellm::Request req;
        CHECK(req.add_tokens(prompt).ok());
        CHECK(req.set_max_generate_length(budget).ok());
        CHECK(req.set_ignore_eos(true).ok());
        std::atomic<size_t> streamed{0};
        CHECK(req.set_stream([&](size_t, int32_t, std::string_view) {
                     streamed.fetch_add(1);
                     // Slow the worker down so the cancel surely lands before the budget is used.
                     std::this_thread::sleep_for(std::chrono::milliseconds(2));
                     return true;
                 }).ok());
        edgellm::Expected<edgellm::Response> result{edgellm::Status()};
        std::thread worker([&] { result = rt.handle(req); });
        while (streamed.load() < 2) std::this_thread::yield();
        CHECK(req.cancel().ok());
        worker.join();
        CHECK(result.ok());
        if (result.ok()) {
            CHECK(result.value().finish_reason(0) == EDGELLM_FINISH_CANCELLED);
            size_t n = result.value().token_ids(0).size();
            CHECK(n >= 2 && n < budget);
        }
        // Cancellation is sticky: handling the request again generates nothing.
        auto again = rt.handle(req);
        CHECK(again.ok() && again.value().token_ids(0).empty());
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s TINY_MODEL PROMPT_IDS GREEDY_IDS\n", argv[0]);
        return 2;
    }
    test_errors_without_model();
    test_with_model(argv[1], parse_ids(argv[2]), parse_ids(argv[3]));
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
