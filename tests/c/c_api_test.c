/* C11 test of the libedgellm C API, built as a user builds it (find_package against an installed
 * prefix) and run under AddressSanitizer/UBSan by tests/c/CMakeLists.txt.
 *
 * Usage: c_api_test TINY_MODEL PROMPT_IDS GREEDY_IDS
 *   TINY_MODEL  tests/fixtures/tiny/llama/model.gguf (random float32 weights)
 *   PROMPT_IDS  comma-separated prompt token ids from that fixture's golden.json
 *   GREEDY_IDS  comma-separated greedy continuation from golden.json, produced by HF
 *               transformers (eager float32) by tests/fixtures/gen_models.py
 * Prints one line per failed check and closes with "N passed, N failed". */
#include "edgellm.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_passed = 0;
static int g_failed = 0;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (cond) {                                                                              \
            g_passed++;                                                                          \
        } else {                                                                                 \
            g_failed++;                                                                          \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__,   \
                    #cond, edgellm_last_error());                                                \
        }                                                                                        \
    } while (0)

/* The status is the expected one and the thread's last error names what went wrong. */
#define CHECK_STATUS(call, expected)                                                             \
    do {                                                                                         \
        edgellm_status st_ = (call);                                                             \
        if (st_ == (expected)) {                                                                 \
            g_passed++;                                                                          \
        } else {                                                                                 \
            g_failed++;                                                                          \
            fprintf(stderr, "%s:%d: %s returned %u (%s), expected %u; last error: %s\n",         \
                    __FILE__, __LINE__, #call, (unsigned)st_, edgellm_status_string(st_),        \
                    (unsigned)(expected), edgellm_last_error());                                 \
        }                                                                                        \
    } while (0)

static int contains(const char *haystack, const char *needle) {
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* Parses "1,2,3" into ids; returns the count. */
static size_t parse_ids(const char *text, int32_t *ids, size_t cap) {
    size_t n = 0;
    const char *p = text;
    while (*p != '\0' && n < cap) {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ids[n++] = (int32_t)v;
        p = (*end == ',') ? end + 1 : end;
    }
    return n;
}

static void test_version_and_status_strings(void) {
    CHECK(strcmp(edgellm_version(), EDGELLM_VERSION_STRING) == 0);
    CHECK(strcmp(edgellm_status_string(EDGELLM_OK), "success") == 0);
    CHECK(strcmp(edgellm_status_string(EDGELLM_ERR_NULL_POINTER), "NULL pointer argument") == 0);
    CHECK(strcmp(edgellm_status_string(9999), "unknown status code") == 0);
    for (uint32_t code = 0; code <= EDGELLM_ERR_INTERNAL; code++) {
        CHECK(strlen(edgellm_status_string(code)) > 0);
        CHECK(strcmp(edgellm_status_string(code), "unknown status code") != 0);
    }
}

static void test_null_pointers(void) {
    edgellm_runtime *rt = NULL;
    edgellm_request *req = NULL;
    size_t n = 0;
    CHECK_STATUS(edgellm_runtime_create(NULL, NULL, &rt), EDGELLM_ERR_NULL_POINTER);
    CHECK(contains(edgellm_last_error(), "edgellm_runtime_create"));
    CHECK(contains(edgellm_last_error(), "model_path"));
    CHECK(rt == NULL);
    CHECK_STATUS(edgellm_runtime_create("x.gguf", NULL, NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_request_create(NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_request_add_prompt_text(NULL, "hi", 2, NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_request_set_max_generate_length(NULL, 4), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_request_cancel(NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_runtime_handle_request(NULL, NULL, NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_runtime_vocab_size(NULL, &n), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_runtime_capture_cuda_graph(NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_tokenize(NULL, "a", 1, true, NULL, 0, &n), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_detokenize(NULL, NULL, 0, NULL, 0, &n), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_response_count(NULL, &n), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_response_text(NULL, 0, NULL, NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_request_from_json(NULL, 3, 0, &req), EDGELLM_ERR_NULL_POINTER);

    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK(strcmp(edgellm_last_error(), "") == 0); /* success clears the message */
    CHECK_STATUS(edgellm_request_add_prompt_text(req, NULL, 5, NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK_STATUS(edgellm_request_add_prompt_text(req, NULL, 0, NULL), EDGELLM_OK); /* empty text */
    CHECK_STATUS(edgellm_request_add_stop(req, NULL), EDGELLM_ERR_NULL_POINTER);
    edgellm_message bad = {NULL, "content"};
    CHECK_STATUS(edgellm_request_add_prompt_messages(req, &bad, 1, NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK(contains(edgellm_last_error(), "messages[0].role"));
    edgellm_request_destroy(req);

    /* Destroy functions accept NULL. */
    edgellm_runtime_destroy(NULL);
    edgellm_request_destroy(NULL);
    edgellm_response_destroy(NULL);
}

static void test_request_validation(void) {
    edgellm_request *req = NULL;
    size_t index = 99;
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);

    const char bad_utf8[] = {'h', 'i', (char)0xff, (char)0xfe, 0};
    CHECK_STATUS(edgellm_request_add_prompt_text(req, bad_utf8, 4, &index), EDGELLM_ERR_INVALID_UTF8);
    CHECK(contains(edgellm_last_error(), "offset 2"));
    CHECK(index == 99); /* outputs are written only on success */
    CHECK_STATUS(edgellm_request_add_stop(req, bad_utf8), EDGELLM_ERR_INVALID_UTF8);
    edgellm_message msg = {"user", bad_utf8};
    CHECK_STATUS(edgellm_request_add_prompt_messages(req, &msg, 1, NULL), EDGELLM_ERR_INVALID_UTF8);

    int32_t negative[] = {1, -5};
    CHECK_STATUS(edgellm_request_add_prompt_tokens(req, negative, 2, NULL), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(edgellm_request_add_stop(req, ""), EDGELLM_ERR_INVALID_ARGUMENT);

    edgellm_sampling_params sp = edgellm_sampling_default_params();
    CHECK(sp.struct_size == sizeof(edgellm_sampling_params));
    CHECK(sp.temperature == 0.0f && sp.top_p == 1.0f);
    sp.temperature = -1.0f;
    CHECK_STATUS(edgellm_request_set_sampling(req, &sp), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "temperature"));
    sp = edgellm_sampling_default_params();
    sp.struct_size = 4; /* not a published layout */
    CHECK_STATUS(edgellm_request_set_sampling(req, &sp), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "struct_size"));
    CHECK_STATUS(edgellm_request_set_sampling(req, NULL), EDGELLM_OK);

    const char *text = "hello";
    CHECK_STATUS(edgellm_request_add_prompt_text(req, text, strlen(text), &index), EDGELLM_OK);
    CHECK(index == 0);
    CHECK_STATUS(edgellm_request_add_prompt_tokens(req, negative, 1, &index), EDGELLM_OK);
    CHECK(index == 1);
    edgellm_request_destroy(req);

    const char *json = "{\"requests\":[{\"prompt\":\"a\"},{\"prompt\":\"b\",\"temprature\":1}]}";
    size_t count = 0;
    CHECK_STATUS(edgellm_request_count_json(json, strlen(json), &count), EDGELLM_OK);
    CHECK(count == 2);
    req = NULL;
    CHECK_STATUS(edgellm_request_from_json(json, strlen(json), 0, &req), EDGELLM_OK);
    edgellm_request_destroy(req);
    req = NULL;
    CHECK_STATUS(edgellm_request_from_json(json, strlen(json), 1, &req), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "temprature"));
    CHECK(req == NULL);
    CHECK_STATUS(edgellm_request_from_json("{", 1, 0, &req), EDGELLM_ERR_INVALID_ARGUMENT);

    /* TensorRT Edge-LLM style batches: "batch_size" consecutive entries form one request. */
    const char *batched = "{\"batch_size\":2,\"temperature\":0,\"requests\":["
                          "{\"prompt\":\"a\"},{\"prompt\":\"b\"},{\"prompt\":\"c\",\"stop\":[\".\"]}]}";
    size_t batch = 0;
    CHECK_STATUS(edgellm_request_batch_size_json(batched, strlen(batched), &batch), EDGELLM_OK);
    CHECK(batch == 2);
    CHECK_STATUS(edgellm_request_batch_size_json(json, strlen(json), &batch), EDGELLM_OK);
    CHECK(batch == 1);
    const char *zero = "{\"batch_size\":0,\"requests\":[]}";
    CHECK_STATUS(edgellm_request_batch_size_json(zero, strlen(zero), &batch), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "batch_size"));
    const char *negative_batch = "{\"batch_size\":-1,\"requests\":[]}";
    CHECK_STATUS(edgellm_request_batch_size_json(negative_batch, strlen(negative_batch), &batch),
                 EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(edgellm_request_batch_size_json(batched, strlen(batched), NULL), EDGELLM_ERR_NULL_POINTER);
    req = NULL;
    CHECK_STATUS(edgellm_request_from_json_range(batched, strlen(batched), 0, 2, &req), EDGELLM_OK);
    CHECK(req != NULL);
    edgellm_request_destroy(req);
    req = NULL;
    CHECK_STATUS(edgellm_request_from_json(batched, strlen(batched), 1, &req), EDGELLM_OK);
    edgellm_request_destroy(req);
    req = NULL;
    /* Entries 1 and 2 disagree on "stop"; a request has one stop list. */
    CHECK_STATUS(edgellm_request_from_json_range(batched, strlen(batched), 1, 2, &req), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "stop"));
    CHECK(req == NULL);
    CHECK_STATUS(edgellm_request_from_json_range(batched, strlen(batched), 2, 2, &req), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "out of range"));
    CHECK_STATUS(edgellm_request_from_json_range(batched, strlen(batched), 0, 0, &req), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(edgellm_request_from_json_range(NULL, 3, 0, 1, &req), EDGELLM_ERR_NULL_POINTER);
    CHECK(req == NULL);
}

static int g_log_calls = 0;
static void on_log(void *user_data, uint32_t level, const char *message) {
    (void)level;
    if (user_data == &g_log_calls && contains(message, "edgellm_request_create")) g_log_calls++;
}

static void test_log_callback(void) {
    CHECK_STATUS(edgellm_set_log_callback(on_log, &g_log_calls, EDGELLM_LOG_DEBUG), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_create(NULL), EDGELLM_ERR_NULL_POINTER); /* failures log at debug */
    CHECK(g_log_calls == 1);
    CHECK_STATUS(edgellm_set_log_callback(NULL, NULL, EDGELLM_LOG_DEBUG), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_create(NULL), EDGELLM_ERR_NULL_POINTER);
    CHECK(g_log_calls == 1);
}

static void write_file(const char *path, const unsigned char *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        g_failed++;
        fprintf(stderr, "cannot write %s\n", path);
        return;
    }
    fwrite(bytes, 1, len, f);
    fclose(f);
}

static void test_bad_model_files(const char *tiny_model) {
    edgellm_runtime *rt = NULL;
    CHECK_STATUS(edgellm_runtime_create("/nonexistent/dir/model.gguf", NULL, &rt), EDGELLM_ERR_IO);
    CHECK(contains(edgellm_last_error(), "/nonexistent/dir/model.gguf"));
    CHECK(rt == NULL);

    const char bad_path[] = {'/', 't', 'm', 'p', '/', (char)0xc3, (char)0x28, 0};
    CHECK_STATUS(edgellm_runtime_create(bad_path, NULL, &rt), EDGELLM_ERR_INVALID_UTF8);

    edgellm_runtime_params params = edgellm_runtime_default_params();
    params.backend = 77;
    CHECK_STATUS(edgellm_runtime_create(tiny_model, &params, &rt), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "backend"));

    /* A caller compiled against 0.1 (whose struct ended with seed) is still served. */
    params = edgellm_runtime_default_params();
    params.struct_size = (uint32_t)offsetof(edgellm_runtime_params, exact_math);
    params.exact_math = 77; /* beyond the old struct: must be ignored */
    CHECK_STATUS(edgellm_runtime_create(tiny_model, &params, &rt), EDGELLM_OK);
    edgellm_runtime_destroy(rt);
    rt = NULL;

    /* Not GGUF at all. */
    const unsigned char not_gguf[] = "this is not a model file";
    write_file("edgellm_test_not_gguf.gguf", not_gguf, sizeof not_gguf);
    CHECK_STATUS(edgellm_runtime_create("edgellm_test_not_gguf.gguf", NULL, &rt), EDGELLM_ERR_MODEL_FORMAT);
    CHECK(contains(edgellm_last_error(), "edgellm_test_not_gguf.gguf"));

    /* The real fixture cut in half: header parses, data section missing. */
    FILE *f = fopen(tiny_model, "rb");
    CHECK(f != NULL);
    if (f != NULL) {
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        size_t half = (size_t)(size / 2);
        unsigned char *buf = malloc(half);
        CHECK(buf != NULL && fread(buf, 1, half, f) == half);
        fclose(f);
        write_file("edgellm_test_truncated.gguf", buf, half);
        free(buf);
        CHECK_STATUS(edgellm_runtime_create("edgellm_test_truncated.gguf", NULL, &rt), EDGELLM_ERR_MODEL_FORMAT);
        CHECK(contains(edgellm_last_error(), "edgellm_test_truncated.gguf"));
        CHECK(rt == NULL);
    }
    remove("edgellm_test_not_gguf.gguf");
    remove("edgellm_test_truncated.gguf");
}

/* Stream state: records tokens and text, and cancels after `cancel_after` tokens (0 = never). */
typedef struct {
    int32_t ids[256];
    size_t n;
    char text[4096];
    size_t text_len;
    size_t cancel_after;
} stream_state;

static int on_token(void *user_data, size_t prompt_index, int32_t token, const char *text, size_t len) {
    stream_state *s = user_data;
    if (prompt_index != 0 || s->n >= 256 || s->text_len + len >= sizeof s->text) return 1;
    if (text[len] != '\0') return 1; /* promised NUL-terminated */
    s->ids[s->n++] = token;
    memcpy(s->text + s->text_len, text, len);
    s->text_len += len;
    s->text[s->text_len] = '\0';
    return (s->cancel_after != 0 && s->n >= s->cancel_after) ? 1 : 0;
}

/* The stream reported exactly the tokens ids[0..n]; a final call that only flushes held-back
 * text (repeating the last token id) is allowed. */
static int stream_matches(const stream_state *s, const int32_t *ids, size_t n) {
    if (n == 0 || s->n < n || memcmp(s->ids, ids, n * sizeof *ids) != 0) return 0;
    return s->n == n || (s->n == n + 1 && s->ids[n] == s->ids[n - 1]);
}

static void test_generation(const char *tiny_model, const int32_t *prompt, size_t n_prompt,
                            const int32_t *greedy, size_t n_greedy) {
    edgellm_runtime_params params = edgellm_runtime_default_params();
    params.backend = EDGELLM_BACKEND_CPU;
    params.threads = 2;
    edgellm_runtime *rt = NULL;
    CHECK_STATUS(edgellm_runtime_create(tiny_model, &params, &rt), EDGELLM_OK);
    if (rt == NULL) return;

    const char *arch = NULL;
    size_t vocab = 0, layers = 0, ctx = 0;
    CHECK_STATUS(edgellm_runtime_architecture(rt, &arch), EDGELLM_OK);
    CHECK(arch != NULL && strcmp(arch, "llama") == 0);
    CHECK_STATUS(edgellm_runtime_vocab_size(rt, &vocab), EDGELLM_OK);
    CHECK(vocab > 0);
    CHECK_STATUS(edgellm_runtime_layer_count(rt, &layers), EDGELLM_OK);
    CHECK(layers > 0);
    CHECK_STATUS(edgellm_runtime_context_length(rt, &ctx), EDGELLM_OK);
    CHECK(ctx > 0);

    /* CPU runtime: CUDA graphs are unsupported, with a message saying so. */
    CHECK_STATUS(edgellm_runtime_capture_cuda_graph(rt), EDGELLM_ERR_UNSUPPORTED);
    CHECK(strlen(edgellm_last_error()) > 0);

    /* Size-query convention: detokenize the prompt, then tokenize it back. */
    size_t needed = 0;
    CHECK_STATUS(edgellm_detokenize(rt, prompt, n_prompt, NULL, 0, &needed), EDGELLM_ERR_BUFFER_TOO_SMALL);
    CHECK(needed >= 1);
    char *text = malloc(needed);
    CHECK_STATUS(edgellm_detokenize(rt, prompt, n_prompt, text, needed, &needed), EDGELLM_OK);
    CHECK(text != NULL && strlen(text) + 1 == needed);
    size_t n_ids = 0;
    CHECK_STATUS(edgellm_tokenize(rt, text, needed - 1, false, NULL, 0, &n_ids), EDGELLM_ERR_BUFFER_TOO_SMALL);
    CHECK(n_ids > 0);
    int32_t *ids = calloc(n_ids + 1, sizeof *ids);
    ids[n_ids] = -7;
    if (n_ids > 1) {
        CHECK_STATUS(edgellm_tokenize(rt, text, needed - 1, false, ids, n_ids - 1, &n_ids),
                     EDGELLM_ERR_BUFFER_TOO_SMALL);
        CHECK(ids[0] == 0); /* untouched on failure */
    }
    CHECK_STATUS(edgellm_tokenize(rt, text, needed - 1, false, ids, n_ids, &n_ids), EDGELLM_OK);
    CHECK(ids[n_ids] == -7); /* nothing written past the count */
    free(ids);
    free(text);

    /* Greedy generation from the golden prompt ids matches transformers. */
    edgellm_request *req = NULL;
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_add_prompt_tokens(req, prompt, n_prompt, NULL), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_max_generate_length(req, n_greedy), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_ignore_eos(req, true), EDGELLM_OK);
    stream_state stream;
    memset(&stream, 0, sizeof stream);
    CHECK_STATUS(edgellm_request_set_stream_callback(req, on_token, &stream), EDGELLM_OK);
    edgellm_response *resp = NULL;
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_OK);
    if (resp != NULL) {
        size_t count = 0, n_out = 0, n_prompt_tokens = 0;
        const int32_t *out_ids = NULL;
        const char *out_text = NULL;
        size_t out_len = 0;
        edgellm_finish_reason reason = EDGELLM_FINISH_ERROR;
        double ttft = -1.0, tps = -1.0;
        CHECK_STATUS(edgellm_response_count(resp, &count), EDGELLM_OK);
        CHECK(count == 1);
        CHECK_STATUS(edgellm_response_output_ids(resp, 0, &out_ids, &n_out), EDGELLM_OK);
        CHECK(n_out == n_greedy);
        CHECK(n_out == n_greedy && memcmp(out_ids, greedy, n_greedy * sizeof *greedy) == 0);
        CHECK(stream_matches(&stream, out_ids, n_out));
        CHECK_STATUS(edgellm_response_text(resp, 0, &out_text, &out_len), EDGELLM_OK);
        CHECK(out_len == stream.text_len && strcmp(out_text, stream.text) == 0);
        CHECK_STATUS(edgellm_response_prompt_token_count(resp, 0, &n_prompt_tokens), EDGELLM_OK);
        CHECK(n_prompt_tokens == n_prompt);
        CHECK_STATUS(edgellm_response_finish_reason(resp, 0, &reason), EDGELLM_OK);
        CHECK(reason == EDGELLM_FINISH_LENGTH);
        CHECK_STATUS(edgellm_response_ttft_ms(resp, 0, &ttft), EDGELLM_OK);
        CHECK(ttft >= 0.0);
        CHECK_STATUS(edgellm_response_decode_tokens_per_second(resp, 0, &tps), EDGELLM_OK);
        CHECK(tps >= 0.0);
        CHECK_STATUS(edgellm_response_text(resp, 1, &out_text, &out_len), EDGELLM_ERR_INVALID_ARGUMENT);
        edgellm_response_destroy(resp);
    }
    edgellm_request_destroy(req);

    /* A two-entry JSON batch of the golden prompt: one request, two outputs, both the
     * transformers greedy continuation. */
    {
        char json[4096];
        char ids_text[2048];
        size_t pos = 0;
        ids_text[0] = '\0';
        for (size_t i = 0; i < n_prompt && pos + 16 < sizeof ids_text; i++)
            pos += (size_t)snprintf(ids_text + pos, sizeof ids_text - pos, "%s%d", i ? "," : "", (int)prompt[i]);
        int len = snprintf(json, sizeof json,
                           "{\"batch_size\":2,\"temperature\":0,\"max_generate_length\":%zu,\"ignore_eos\":true,"
                           "\"requests\":[{\"token_ids\":[%s]},{\"token_ids\":[%s]}]}",
                           n_greedy, ids_text, ids_text);
        CHECK(len > 0 && (size_t)len < sizeof json);
        req = NULL;
        CHECK_STATUS(edgellm_request_from_json_range(json, (size_t)len, 0, 2, &req), EDGELLM_OK);
        resp = NULL;
        CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_OK);
        if (resp != NULL) {
            size_t count = 0;
            CHECK_STATUS(edgellm_response_count(resp, &count), EDGELLM_OK);
            CHECK(count == 2);
            for (size_t k = 0; k < count && k < 2; k++) {
                const int32_t *out_ids = NULL;
                size_t n_out = 0;
                CHECK_STATUS(edgellm_response_output_ids(resp, k, &out_ids, &n_out), EDGELLM_OK);
                CHECK(n_out == n_greedy && memcmp(out_ids, greedy, n_greedy * sizeof *greedy) == 0);
            }
            edgellm_response_destroy(resp);
        }
        edgellm_request_destroy(req);
    }

    /* Cancel from the stream callback: generation stops after the third token. */
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_add_prompt_tokens(req, prompt, n_prompt, NULL), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_max_generate_length(req, 12), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_ignore_eos(req, true), EDGELLM_OK);
    memset(&stream, 0, sizeof stream);
    stream.cancel_after = 3;
    CHECK_STATUS(edgellm_request_set_stream_callback(req, on_token, &stream), EDGELLM_OK);
    resp = NULL;
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_OK);
    if (resp != NULL) {
        size_t n_out = 0;
        const int32_t *out_ids = NULL;
        edgellm_finish_reason reason = EDGELLM_FINISH_ERROR;
        CHECK_STATUS(edgellm_response_finish_reason(resp, 0, &reason), EDGELLM_OK);
        CHECK(reason == EDGELLM_FINISH_CANCELLED);
        CHECK_STATUS(edgellm_response_output_ids(resp, 0, &out_ids, &n_out), EDGELLM_OK);
        CHECK(n_out == 3 && memcmp(out_ids, greedy, 3 * sizeof *greedy) == 0);
        CHECK(stream_matches(&stream, greedy, 3));
        edgellm_response_destroy(resp);
    }
    edgellm_request_destroy(req);

    /* Unknown template style: an error naming the style, from both entry points. */
    edgellm_message msg = {"user", "Hello"};
    size_t needed_tpl = 0;
    CHECK_STATUS(edgellm_apply_chat_template(rt, &msg, 1, true, "no-such-style", NULL, 0, &needed_tpl),
                 EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "no-such-style"));
    CHECK(contains(edgellm_last_error(), "chatml")); /* lists the known styles */
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_add_prompt_messages(req, &msg, 1, NULL), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_template_style(req, "no-such-style"), EDGELLM_OK);
    resp = NULL;
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "no-such-style"));
    CHECK(resp == NULL);
    edgellm_request_destroy(req);
    edgellm_runtime_destroy(rt);

    /* A prompt longer than the context window: a clear error, and the runtime stays usable. */
    params.context_length = 16;
    rt = NULL;
    CHECK_STATUS(edgellm_runtime_create(tiny_model, &params, &rt), EDGELLM_OK);
    if (rt == NULL) return;
    CHECK_STATUS(edgellm_runtime_context_length(rt, &ctx), EDGELLM_OK);
    CHECK(ctx == 16);
    int32_t long_prompt[64];
    for (size_t i = 0; i < 64; i++) long_prompt[i] = prompt[i % n_prompt];
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_add_prompt_tokens(req, long_prompt, 64, NULL), EDGELLM_OK);
    resp = NULL;
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_ERR_CONTEXT_OVERFLOW);
    CHECK(contains(edgellm_last_error(), "64"));
    CHECK(resp == NULL);
    edgellm_request_destroy(req);
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_add_prompt_tokens(req, prompt, 4, NULL), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_max_generate_length(req, 4), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_ignore_eos(req, true), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_OK);
    edgellm_response_destroy(resp);
    edgellm_request_destroy(req);
    edgellm_runtime_destroy(rt);
}

/* Cached system prompt, prefix cache on disk, LoRA by name, metrics. */
static void test_serving(const char *model, const char *lora_dir) {
    edgellm_runtime *rt = NULL;
    CHECK_STATUS(edgellm_runtime_create(model, NULL, &rt), EDGELLM_OK);
    const char *system = "You are a careful assistant for the little robot of the river bank. "
                         "Answer in short sentences and always count the stones you see.";
    size_t cached = 0;
    CHECK_STATUS(edgellm_runtime_cache_system_prompt(rt, system, NULL, &cached), EDGELLM_OK);
    CHECK(cached >= 16);
    CHECK_STATUS(edgellm_runtime_cache_system_prompt(rt, NULL, NULL, NULL), EDGELLM_ERR_NULL_POINTER);

    edgellm_request *req = NULL;
    edgellm_response *resp = NULL;
    edgellm_message msgs[2] = {{"system", system}, {"user", "How many stones?"}};
    CHECK_STATUS(edgellm_request_create(&req), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_add_prompt_messages(req, msgs, 2, NULL), EDGELLM_OK);
    CHECK_STATUS(edgellm_request_set_max_generate_length(req, 4), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_OK);
    size_t reused = 0;
    CHECK_STATUS(edgellm_response_cached_prompt_tokens(resp, 0, &reused), EDGELLM_OK);
    CHECK(reused >= cached);
    edgellm_response_destroy(resp);

    /* Metrics: a caller-sized struct. */
    edgellm_runtime_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK_STATUS(edgellm_runtime_get_metrics(rt, &m), EDGELLM_OK);
    CHECK(m.kv_total_blocks > 0 && m.kv_cached_blocks >= cached / 16 && m.cache_hits == 1);
    CHECK(m.weight_bytes > 0 && m.sequences == 1 && m.struct_size == sizeof m);
    m.struct_size = 2;
    CHECK_STATUS(edgellm_runtime_get_metrics(rt, &m), EDGELLM_ERR_INVALID_ARGUMENT);

    /* The prefix cache survives a save and load; a corrupt file is refused. */
    char path[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/edgellm_c_api_%p.kv", tmp ? tmp : "/tmp", (void *)&m);
    size_t blocks = 0, loaded = 0;
    CHECK_STATUS(edgellm_runtime_save_prefix_cache(rt, path, &blocks), EDGELLM_OK);
    CHECK(blocks >= cached / 16);
    edgellm_runtime *rt2 = NULL;
    CHECK_STATUS(edgellm_runtime_create(model, NULL, &rt2), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_load_prefix_cache(rt2, path, &loaded), EDGELLM_OK);
    CHECK(loaded == blocks);
    FILE *f = fopen(path, "r+b");
    if (f) {
        fseek(f, 40, SEEK_SET);
        fputc(0x5a, f);
        fclose(f);
    }
    CHECK_STATUS(edgellm_runtime_load_prefix_cache(rt2, path, NULL), EDGELLM_ERR_MODEL_FORMAT);
    CHECK(contains(edgellm_last_error(), "checksum"));
    remove(path);
    edgellm_runtime_destroy(rt2);

    /* LoRA by name; unknown names are clear errors. */
    char adapter[512];
    snprintf(adapter, sizeof adapter, "%s/a", lora_dir);
    CHECK_STATUS(edgellm_runtime_load_lora(rt, "a", adapter), EDGELLM_OK);
    snprintf(adapter, sizeof adapter, "%s/wrong_shape", lora_dir);
    CHECK_STATUS(edgellm_runtime_load_lora(rt, "w", adapter), EDGELLM_ERR_INVALID_ARGUMENT);
    CHECK(contains(edgellm_last_error(), "lora_A"));
    CHECK_STATUS(edgellm_request_set_lora(req, "missing", 1.0f), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_ERR_NOT_FOUND);
    CHECK(contains(edgellm_last_error(), "missing"));
    CHECK_STATUS(edgellm_request_set_lora(req, "a", 0.5f), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_handle_request(rt, req, &resp), EDGELLM_OK);
    edgellm_response_destroy(resp);
    CHECK_STATUS(edgellm_runtime_switch_lora(rt, "a"), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_switch_lora(rt, "nope"), EDGELLM_ERR_NOT_FOUND);
    CHECK_STATUS(edgellm_runtime_unload_lora(rt, "a"), EDGELLM_OK);
    CHECK_STATUS(edgellm_runtime_unload_lora(rt, "a"), EDGELLM_ERR_NOT_FOUND);
    edgellm_request_destroy(req);
    edgellm_runtime_destroy(rt);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s TINY_MODEL PROMPT_IDS GREEDY_IDS LORA_FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    int32_t prompt[256], greedy[256];
    size_t n_prompt = parse_ids(argv[2], prompt, 256);
    size_t n_greedy = parse_ids(argv[3], greedy, 256);
    if (n_prompt == 0 || n_greedy < 3) {
        fprintf(stderr, "need prompt ids and at least 3 greedy ids\n");
        return 2;
    }
    test_version_and_status_strings();
    test_null_pointers();
    test_request_validation();
    test_log_callback();
    test_bad_model_files(argv[1]);
    test_generation(argv[1], prompt, n_prompt, greedy, n_greedy);
    test_serving(argv[1], argv[4]);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
