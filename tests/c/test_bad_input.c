/* Bad input through the C API: NULL for every pointer argument, invalid UTF-8, out-of-range
 * enumerations, NaN / inf / out-of-range rewards, unknown episode ids, a prompt over the context,
 * malformed JSON, free(NULL), a session used from its own callback (BUSY) and a session used after
 * its runtime was freed (RUNTIME_CLOSED). Every case must return the documented status with a
 * message, leave out-parameters untouched, and not crash. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#define BAD_UTF8 "caf\xc3\x28 au lait" /* \xc3 starts a 2-byte sequence; \x28 cannot continue it */
#define SENTINEL ((void *)0x5a5a)

static attune_session *g_session; /* for the re-entrant callback */

/* Statuses seen from inside a text callback that calls back into its own session. */
typedef struct {
    int calls;
    attune_status save, free_session, generate, stats, other_runtime;
    attune_runtime *runtime;
} reentry_t;

static bool reenter(void *user_data, const char *text, size_t len) {
    reentry_t *r = (reentry_t *)user_data;
    attune_reply *inner = NULL;
    size_t n = 0;
    (void)text;
    (void)len;
    if (r->calls++ == 0) {
        r->save = attune_session_save(g_session, NULL);
        r->free_session = attune_session_free(g_session);
        r->generate = attune_session_generate(g_session, ATTUNE_PROMPT_TEXT, "x", NULL, NULL, NULL,
                                              &inner);
        r->stats = attune_session_stats_json(g_session, NULL, 0, &n);
        /* The runtime itself is not locked by a generation. */
        r->other_runtime = attune_runtime_context_tokens(r->runtime, &n);
    }
    return r->calls < 3;
}

static void null_arguments(attune_runtime *rt, attune_session *s, const char *config) {
    attune_runtime *rt_out = (attune_runtime *)SENTINEL;
    attune_session *s_out = (attune_session *)SENTINEL;
    attune_reply *reply = NULL, *r_out = (attune_reply *)SENTINEL;
    attune_update_report *report = NULL, *rep_out = (attune_update_report *)SENTINEL;
    attune_bytes *b_out = (attune_bytes *)SENTINEL;
    const char *str = (const char *)SENTINEL;
    const uint8_t *data = (const uint8_t *)SENTINEL;
    size_t n = 12345;
    uint64_t id = 777, ep = 0;
    uint32_t u = 777;
    bool flag = true;
    char buf[64];
    const uint8_t bytes[3] = {1, 2, 3};

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_new(NULL, &rt_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_new(config, NULL));
    CHECK(rt_out == (attune_runtime *)SENTINEL);
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_context_tokens(NULL, &n));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_context_tokens(rt, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_forget_user(NULL, "u", &flag));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_forget_user(rt, NULL, &flag));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_new(NULL, "u", &s_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_new(rt, NULL, &s_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_new(rt, "u", NULL));
    CHECK(s_out == (attune_session *)SENTINEL);
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_user_id(NULL, &str));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_user_id(s, NULL));

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_generate(NULL, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &r_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, NULL, NULL, NULL, NULL, &r_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_generate_unrecorded(
                                                   NULL, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &r_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_generate_unrecorded(
                                                   s, ATTUNE_PROMPT_TEXT, NULL, NULL, NULL, NULL, &r_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_generate_unrecorded(
                                                   s, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, NULL));
    CHECK(r_out == (attune_reply *)SENTINEL);

    /* A real reply and report to pass with NULL out-parameters. Options and callback may be NULL. */
    REQUIRE_OK(attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_text(NULL, &str, &n));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_text(reply, NULL, &n));
    EXPECT_OK(attune_reply_text(reply, &str, NULL)); /* out_len may be NULL */
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_episode_id(NULL, &id));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_episode_id(reply, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_finish_reason(NULL, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_finish_reason(reply, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_token_count(NULL, &n));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_token_count(reply, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_json(NULL, &str));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_reply_json(reply, NULL));
    CHECK(id == 777 && u == 777);
    REQUIRE_OK(attune_reply_episode_id(reply, &ep));
    attune_reply_free(reply);

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_feedback(NULL, ep, 0.5, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_feedback_thumbs(NULL, ep, true, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_feedback_stars(NULL, ep, 3, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_feedback_score(NULL, ep, "m", 1, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_feedback_score(s, ep, NULL, 1, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_feedback_json(NULL, ep, "{\"thumbs\": true}", &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_feedback_json(s, ep, NULL, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_demonstrate(NULL, ATTUNE_PROMPT_USER, "q", "a", &id));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_demonstrate(s, ATTUNE_PROMPT_USER, NULL, "a", &id));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT,
                  attune_session_demonstrate(s, ATTUNE_PROMPT_USER, "q", NULL, &id));
    CHECK(id == 777 && u == 777);
    /* The rejected calls recorded nothing: the episode still takes its feedback (out may be NULL). */
    EXPECT_OK(attune_session_feedback(s, ep, 0.5, NULL));

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_update(NULL, &rep_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_update(s, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_last_report(NULL, &rep_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_last_report(s, NULL));
    CHECK(rep_out == (attune_update_report *)SENTINEL);
    REQUIRE_OK(attune_session_update(s, &report));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_update_report_outcome(NULL, &u));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_update_report_outcome(report, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_update_report_json(NULL, &str));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_update_report_json(report, NULL));
    attune_update_report_free(report);

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_save(NULL, &id));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_rollback(NULL, 1));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_reset(NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_forget(NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_export(NULL, &b_out));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_export(s, NULL));
    CHECK(b_out == (attune_bytes *)SENTINEL);
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_import(NULL, bytes, sizeof bytes));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_import(s, NULL, 3));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_bytes_data(NULL, &data, &n));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_stats_json(NULL, buf, sizeof buf, &n));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_stats_json(s, NULL, 4096, &n));
    {
        attune_bytes *exported = NULL;
        REQUIRE_OK(attune_session_export(s, &exported));
        EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_bytes_data(exported, NULL, &n));
        EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_bytes_data(exported, &data, NULL));
        attune_bytes_free(exported);
    }
    CHECK(data == (const uint8_t *)SENTINEL && str != (const char *)SENTINEL);

    /* The message buffer: NULL with room to write is refused without changing the message. */
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_reset(NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_last_error_message(NULL, 100, &n));
    CHECK(strcmp(last_error(), "session is NULL") == 0);

    /* free(NULL) is a no-op for every object. */
    attune_runtime_free(NULL);
    EXPECT_OK(attune_session_free(NULL));
    attune_reply_free(NULL);
    attune_update_report_free(NULL);
    attune_bytes_free(NULL);
    EXPECT_OK(attune_set_log_callback(NULL, NULL, ATTUNE_LOG_OFF));
}

static void invalid_utf8_and_enums(attune_runtime *rt, attune_session *s) {
    attune_runtime *rt_out = NULL;
    attune_session *s_out = NULL;
    attune_reply *reply = NULL;
    uint64_t ep = 0;
    bool existed;

    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8, attune_runtime_new("{\"x\": \"" BAD_UTF8 "\"}", &rt_out));
    CHECK(strstr(last_error(), "config_json") && strstr(last_error(), "offset"));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8, attune_session_new(rt, BAD_UTF8, &s_out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8, attune_runtime_forget_user(rt, BAD_UTF8, &existed));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, BAD_UTF8, NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"stop_strings\": [\"" BAD_UTF8 "\"]}",
                                          NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8,
                  attune_session_demonstrate(s, ATTUNE_PROMPT_USER, "q", BAD_UTF8, NULL));
    REQUIRE_OK(attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &reply));
    attune_reply_episode_id(reply, &ep);
    attune_reply_free(reply);
    reply = NULL;
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8, attune_session_feedback_score(s, ep, BAD_UTF8, 1, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8,
                  attune_session_feedback_json(s, ep, "{\"score\": {\"source\": \"" BAD_UTF8 "\", \"value\": 1}}", NULL));

    /* Enumerations: prompt kinds 0..2, log levels 0..5. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ENUM,
                  attune_session_generate(s, 3, "hi", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ENUM,
                  attune_session_generate(s, 0xFFFFFFFFu, "hi", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ENUM,
                  attune_session_generate_unrecorded(s, 7, "hi", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ENUM, attune_session_demonstrate(s, 3, "q", "a", NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ENUM, attune_set_log_callback(NULL, NULL, ATTUNE_LOG_TRACE + 1));
    CHECK(reply == NULL && rt_out == NULL && s_out == NULL);
    EXPECT_OK(attune_session_feedback_thumbs(s, ep, true, NULL)); /* untouched by the failures */
}

static void rewards(attune_session *s) {
    attune_reply *reply = NULL;
    uint64_t ep = 0;
    uint32_t out = 777;
    const double bad[] = {NAN, INFINITY, -INFINITY, 1.5, -1.0000001, 1e300};
    size_t i;

    REQUIRE_OK(attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hello", NULL, NULL, NULL, &reply));
    attune_reply_episode_id(reply, &ep);
    attune_reply_free(reply);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback(s, ep, bad[i], &out));
    }
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_score(s, ep, "m", NAN, &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_score(s, ep, "m", INFINITY, &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_stars(s, ep, 0, &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_stars(s, ep, 6, &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_stars(s, ep, 0xFFFFFFFFu, &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, ep, "{\"stars\": 9}", &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, ep, "{\"outcome\": 2}", &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD,
                  attune_session_feedback_json(s, ep, "{\"outcome\": 1, \"weight\": 1e39}", &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, ep, "{\"thumbs\": tru", &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, ep, "{}", &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_feedback_json(s, ep, "{\"thumbs\": true, \"stars\": 2}", &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, ep, "{\"smiles\": 3}", &out));
    /* Unknown episode ids. */
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_feedback(s, ep + 1000, 0.5, &out));
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_feedback_thumbs(s, UINT64_MAX, true, &out));
    CHECK(out == 777);
    /* None of that was recorded: the episode takes a good reward, and a second signal adds to it
     * (one episode is ready, so nothing more than a queued reward happened). */
    EXPECT_OK(attune_session_feedback(s, ep, -0.25, &out));
    CHECK(out == ATTUNE_FEEDBACK_QUEUED);
    out = 777;
    EXPECT_OK(attune_session_feedback(s, ep, 0.5, &out));
    CHECK(out == ATTUNE_FEEDBACK_QUEUED);
}

static void generation_settings(attune_runtime *rt, attune_session *s) {
    attune_reply *reply = NULL;
    attune_session *s_out = NULL;
    char *long_prompt;
    size_t i, ctx = 0;

    /* The prompt over the context window (64 tokens here). */
    REQUIRE_OK(attune_runtime_context_tokens(rt, &ctx));
    CHECK(ctx == 64);
    long_prompt = (char *)malloc(4000);
    long_prompt[0] = '\0';
    for (i = 0; i < 150; i++) strcat(long_prompt, "word ");
    EXPECT_STATUS(ATTUNE_STATUS_CONTEXT_OVERFLOW,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, long_prompt, NULL, NULL, NULL, &reply));
    CHECK(strstr(last_error(), "context") != NULL);
    EXPECT_STATUS(ATTUNE_STATUS_CONTEXT_OVERFLOW,
                  attune_session_demonstrate(s, ATTUNE_PROMPT_TEXT, long_prompt, "ok", NULL));
    free(long_prompt);

    /* Malformed or invalid settings, prompts and ids. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"max_new_tokens\": ", NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "[1, 2]", NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"max_tokens\": 5}", NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"max_new_tokens\": -1}", NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"max_new_tokens\": 0}", NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"sampling\": {\"temperature\": -1}}",
                                          NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", "{\"sampling\": {\"top_p\": 1.5}}",
                                          NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_generate(s, ATTUNE_PROMPT_CHAT, "hello", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON,
                  attune_session_generate(s, ATTUNE_PROMPT_CHAT, "[{\"role\": \"user\"}]", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_new(rt, "", &s_out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_runtime_forget_user(rt, "", NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_rollback(s, 0));
    EXPECT_STATUS(ATTUNE_STATUS_STORE, attune_session_rollback(s, 1000));
    CHECK(reply == NULL && s_out == NULL);
    {
        const uint8_t junk[16] = {0};
        EXPECT_STATUS(ATTUNE_STATUS_CORRUPT_ADAPTER, attune_session_import(s, junk, sizeof junk));
        EXPECT_STATUS(ATTUNE_STATUS_CORRUPT_ADAPTER, attune_session_import(s, junk, 0));
    }
}

static void configurations(const char *good) {
    attune_runtime *rt = NULL;
    char cfg[2048];
    const char *bad_json[] = {"", "{", "{\"engine\": }", "not json", "{\"engine\": {\"model_dir\": \"x\"}",
                              "[]", "42"};
    size_t i;

    for (i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_runtime_new(bad_json[i], &rt));
    }
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new("{\"engine\": {\"model_dir\": 5}}", &rt));
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new("{\"engin\": {}}", &rt));
    snprintf(cfg, sizeof cfg, "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [\"warp-drive\"]}}",
             model_dir());
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    /* Provider options: an unknown key and a bad value name the provider and the key; `cpu` before
     * another provider is refused. */
    snprintf(cfg, sizeof cfg,
             "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [{\"name\": \"qnn\", \"htp_mode\": 1}]}}",
             model_dir());
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    CHECK(strstr(last_error(), "`qnn`") && strstr(last_error(), "`htp_mode`"));
    snprintf(cfg, sizeof cfg,
             "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [{\"name\": \"qnn\", \"performance_mode\": \"turbo\"}]}}",
             model_dir());
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    CHECK(strstr(last_error(), "`qnn`") && strstr(last_error(), "`performance_mode`") && strstr(last_error(), "burst"));
    snprintf(cfg, sizeof cfg, "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [\"cpu\", \"webgpu\"]}}",
             model_dir());
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    CHECK(strstr(last_error(), "after `cpu`") != NULL);
    snprintf(cfg, sizeof cfg, "{\"engine\": {\"model_dir\": \"%s\"}, \"learner\": {\"lr\": -1}}", model_dir());
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    /* Soft Q-learning is an algorithm name; its settings are checked and named when bad. */
    snprintf(cfg, sizeof cfg,
             "{\"engine\": {\"model_dir\": \"%s\"}, \"learner\": {\"algorithm\": \"soft_q\", \"soft_q_tau\": 0.7, "
             "\"soft_q_replay_size\": 16, \"soft_q_replay_batch\": 2, \"soft_q_target_period\": 3}}",
             model_dir());
    REQUIRE_OK(attune_runtime_new(cfg, &rt));
    attune_runtime_free(rt);
    rt = NULL;
    {
        const char *bad_soft_q[][2] = {
            {"\"algorithm\": \"soft-q\"", "soft_q"},
            {"\"algorithm\": \"soft_q\", \"soft_q_tau\": 0", "soft_q_tau"},
            {"\"algorithm\": \"soft_q\", \"soft_q_tau\": -1.5", "soft_q_tau"},
            {"\"algorithm\": \"soft_q\", \"soft_q_target_period\": 0", "soft_q_target_period"},
            {"\"algorithm\": \"soft_q\", \"soft_q_replay_size\": 4, \"soft_q_replay_batch\": 5", "soft_q_replay_batch"},
        };
        for (i = 0; i < sizeof bad_soft_q / sizeof bad_soft_q[0]; i++) {
            snprintf(cfg, sizeof cfg, "{\"engine\": {\"model_dir\": \"%s\"}, \"learner\": {%s}}", model_dir(),
                     bad_soft_q[i][0]);
            EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
            CHECK(rt == NULL && strstr(last_error(), bad_soft_q[i][1]) != NULL);
        }
    }
    EXPECT_STATUS(ATTUNE_STATUS_MODEL, attune_runtime_new("{\"engine\": {\"model_dir\": \"/nonexistent/model\"}}", &rt));
    CHECK(rt == NULL);
    (void)good;
}

int main(void) {
    char *store = temp_store();
    char *config = test_config(store, 0, 64);
    char *no_store = test_config(NULL, 0, 64);
    char cfg[2048];
    attune_runtime *rt = NULL, *rt2 = NULL;
    attune_session *s = NULL, *s2 = NULL;
    attune_reply *reply = NULL;
    const char *user = NULL;
    char tiny[4];
    size_t needed = 0;
    reentry_t re;

    /* A missing ONNX Runtime library, first: the library is loaded once per process. */
    snprintf(cfg, sizeof cfg, "{\"engine\": {\"model_dir\": \"%s\", \"ort_library\": \"/nonexistent/libonnxruntime.so\"}}",
             model_dir());
    EXPECT_STATUS(ATTUNE_STATUS_ORT_LIBRARY, attune_runtime_new(cfg, &rt));
    CHECK(strstr(last_error(), "/nonexistent/libonnxruntime.so") != NULL);
    configurations(config);

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "mallory", &s));
    null_arguments(rt, s, config);
    invalid_utf8_and_enums(rt, s);
    rewards(s);
    generation_settings(rt, s);

    /* The message buffer: too small reports the size needed and leaves the buffer alone. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_rollback(s, 0));
    memcpy(tiny, "abc", 4);
    CHECK(attune_last_error_message(tiny, sizeof tiny, &needed) == ATTUNE_STATUS_BUFFER_TOO_SMALL);
    CHECK(needed > sizeof tiny && strcmp(tiny, "abc") == 0);
    CHECK(attune_last_error_message(NULL, 0, &needed) == ATTUNE_STATUS_BUFFER_TOO_SMALL);

    /* No store configured: persistence is refused with STORE. */
    REQUIRE_OK(attune_runtime_new(no_store, &rt2));
    REQUIRE_OK(attune_session_new(rt2, "nobody", &s2));
    EXPECT_STATUS(ATTUNE_STATUS_STORE, attune_session_save(s2, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_STORE, attune_session_export(s2, &(attune_bytes *){NULL}));
    EXPECT_STATUS(ATTUNE_STATUS_STORE, attune_session_rollback(s2, 1));
    EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_session_last_report(s2, &(attune_update_report *){NULL}));

    /* BUSY: the session used from inside its own text callback. */
    memset(&re, 0, sizeof re);
    re.runtime = rt2;
    g_session = s2;
    EXPECT_OK(attune_session_generate(s2, ATTUNE_PROMPT_TEXT, "Once upon a time",
                                      "{\"max_new_tokens\": 8}", reenter, &re, &reply));
    CHECK(re.calls >= 1);
    CHECK(re.save == ATTUNE_STATUS_BUSY && re.free_session == ATTUNE_STATUS_BUSY);
    CHECK(re.generate == ATTUNE_STATUS_BUSY && re.stats == ATTUNE_STATUS_BUSY);
    CHECK(re.other_runtime == ATTUNE_STATUS_OK);
    attune_reply_free(reply);
    reply = NULL;

    /* RUNTIME_CLOSED: sessions outlive their runtime's handle as closed objects. */
    attune_runtime_free(rt2);
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED,
                  attune_session_generate(s2, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED, attune_session_feedback(s2, 0, 1.0, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED, attune_session_update(s2, &(attune_update_report *){NULL}));
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED, attune_session_save(s2, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED, attune_session_reset(s2));
    EXPECT_OK(attune_session_user_id(s2, &user));
    CHECK(reply == NULL && user && strcmp(user, "nobody") == 0);
    EXPECT_OK(attune_session_free(s2));

    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    remove_tree(store);
    free(store);
    free(config);
    free(no_store);
    return report_results("test_bad_input");
}
