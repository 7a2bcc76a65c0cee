/* The whole lifecycle through the C API on the tiny model: runtime, session, generation with
 * streaming and barge-in, feedback of every kind, automatic and explicit updates with their
 * reports, demonstrations, statistics, save / export / import / rollback / reset / forget, a saved
 * adapter loaded by a new session (after the first was freed: one open session per user), and the
 * log callback. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "common.h"

/* What the text callback saw. */
typedef struct {
    char text[4096];
    size_t len;
    int pieces;
    int stop_after; /* return false after this many pieces (0: never) */
    int nul_ok;     /* every piece was NUL-terminated at text[len] */
} stream_t;

static bool on_text(void *user_data, const char *text, size_t len) {
    stream_t *s = (stream_t *)user_data;
    if (text[len] != '\0') s->nul_ok = 0;
    if (s->len + len < sizeof s->text) {
        memcpy(s->text + s->len, text, len);
        s->len += len;
        s->text[s->len] = '\0';
    }
    s->pieces++;
    return s->stop_after == 0 || s->pieces < s->stop_after;
}

static void stream_init(stream_t *s, int stop_after) {
    memset(s, 0, sizeof *s);
    s->stop_after = stop_after;
    s->nul_ok = 1;
}

/* Log records seen (the callback may run on any thread). */
typedef struct {
    pthread_mutex_t lock;
    int records;
    int bad_level;
} log_sink_t;

static void on_log(void *user_data, uint32_t level, const char *target, const char *message) {
    log_sink_t *l = (log_sink_t *)user_data;
    pthread_mutex_lock(&l->lock);
    l->records++;
    if (level < ATTUNE_LOG_ERROR || level > ATTUNE_LOG_TRACE || !target || !message) l->bad_level++;
    pthread_mutex_unlock(&l->lock);
}

/* Generates with `kind`/`prompt`, checks what was streamed against the reply, returns the reply. */
static attune_reply *generate_checked(attune_session *s, uint32_t kind, const char *prompt,
                                      const char *options) {
    stream_t st;
    attune_reply *reply = NULL;
    const char *text = NULL;
    size_t len = 0, tokens = 0;
    uint32_t finish = 99;
    uint64_t episode = 0;
    stream_init(&st, 0);
    EXPECT_OK(attune_session_generate(s, kind, prompt, options, on_text, &st, &reply));
    if (!reply) return NULL;
    EXPECT_OK(attune_reply_text(reply, &text, &len));
    EXPECT_OK(attune_reply_finish_reason(reply, &finish));
    EXPECT_OK(attune_reply_token_count(reply, &tokens));
    EXPECT_OK(attune_reply_episode_id(reply, &episode));
    CHECK(text != NULL && strlen(text) == len);
    CHECK(finish <= ATTUNE_FINISH_CANCELLED);
    CHECK(tokens >= 1 && tokens <= 12);
    /* Without stop strings, the streamed pieces add up to the reply. */
    CHECK(st.len == len && memcmp(st.text, text, len) == 0);
    CHECK(st.nul_ok);
    return reply;
}

/* What the runtime runs on, through a caller's buffer: NULL runtime, a size query, a too-small
 * buffer left untouched, then the real one; and a runtime whose providers carry options, one of
 * them not compiled into this build. */
static void runtime_stats(attune_runtime *rt) {
    char small[8] = "xxxxxxx", *stats, cfg[1024];
    size_t needed = 0;
    attune_runtime *rt2 = NULL;

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_stats_json(NULL, small, sizeof small, &needed));
    CHECK(strstr(last_error(), "runtime") != NULL);
    EXPECT_STATUS(ATTUNE_STATUS_BUFFER_TOO_SMALL, attune_runtime_stats_json(rt, NULL, 0, &needed));
    CHECK(needed > sizeof small);
    EXPECT_STATUS(ATTUNE_STATUS_BUFFER_TOO_SMALL, attune_runtime_stats_json(rt, small, sizeof small, NULL));
    CHECK(strcmp(small, "xxxxxxx") == 0);
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_runtime_stats_json(rt, NULL, needed, NULL));
    stats = (char *)malloc(needed);
    EXPECT_OK(attune_runtime_stats_json(rt, stats, needed, NULL));
    CHECK(strlen(stats) + 1 == needed);
    CHECK(strstr(stats, "\"provider\":\"cpu\"") && strstr(stats, "\"compute_device\":\"cpu\"") &&
          strstr(stats, "\"context_tokens\":256") && strstr(stats, "\"kv_cache_in_place\":true") &&
          strstr(stats, "\"failed_providers\":[]"));
    free(stats);

    snprintf(cfg, sizeof cfg,
             "{\"engine\": {\"model_dir\": \"%s\", \"threads\": 2, \"max_context\": 64,"
             " \"execution_providers\": [{\"name\": \"xnnpack\", \"threads\": 2},"
             " {\"name\": \"cpu\", \"arena\": false}]}}",
             model_dir());
    REQUIRE_OK(attune_runtime_new(cfg, &rt2));
    EXPECT_STATUS(ATTUNE_STATUS_BUFFER_TOO_SMALL, attune_runtime_stats_json(rt2, NULL, 0, &needed));
    stats = (char *)malloc(needed);
    EXPECT_OK(attune_runtime_stats_json(rt2, stats, needed, &needed));
    CHECK(strstr(stats, "\"provider\":\"cpu\"") && strstr(stats, "\"arena\":false") &&
          strstr(stats, "{\"name\":\"xnnpack\",\"reason\":\"not compiled in"));
    free(stats);
    attune_runtime_free(rt2);
}

int main(void) {
    char *store = temp_store();
    char *config = test_config(store, 2, 256);
    attune_runtime *rt = NULL;
    attune_session *s = NULL, *again = NULL;
    attune_reply *reply = NULL;
    attune_update_report *report = NULL;
    attune_bytes *bytes = NULL;
    const uint8_t *data = NULL;
    const char *json = NULL, *user = NULL;
    size_t data_len = 0, ctx = 0, needed = 0;
    uint64_t ep1 = 0, ep2 = 0, ep3 = 0, demo = 0, version = 0, version2 = 0;
    uint32_t outcome = 99, finish = 99;
    bool existed = false;
    stream_t st;
    log_sink_t logs;
    char small[4], *stats;
    uint8_t *copy;

    memset(&logs, 0, sizeof logs);
    pthread_mutex_init(&logs.lock, NULL);
    EXPECT_OK(attune_set_log_callback(on_log, &logs, ATTUNE_LOG_INFO));

    REQUIRE_OK(attune_runtime_new(config, &rt));
    EXPECT_OK(attune_runtime_context_tokens(rt, &ctx));
    CHECK(ctx == 256);
    runtime_stats(rt);
    pthread_mutex_lock(&logs.lock);
    CHECK(logs.records > 0 && logs.bad_level == 0); /* "model ... loaded" at INFO */
    pthread_mutex_unlock(&logs.lock);

    REQUIRE_OK(attune_session_new(rt, "alice", &s));
    EXPECT_OK(attune_session_user_id(s, &user));
    CHECK(user && strcmp(user, "alice") == 0);

    /* Three kinds of prompt. */
    reply = generate_checked(s, ATTUNE_PROMPT_TEXT, "The weather today is", NULL);
    attune_reply_episode_id(reply, &ep1);
    attune_reply_free(reply);
    reply = generate_checked(s, ATTUNE_PROMPT_USER, "Can you move my appointment to Friday?",
                             "{\"max_new_tokens\": 6, \"sampling\": {\"seed\": 3}}");
    attune_reply_episode_id(reply, &ep2);
    CHECK(ep2 == ep1 + 1);
    EXPECT_OK(attune_reply_json(reply, &json));
    CHECK(json && strstr(json, "\"episode_id\"") && strstr(json, "\"timings\""));
    attune_reply_free(reply);
    reply = generate_checked(s, ATTUNE_PROMPT_CHAT,
                             "[{\"role\": \"system\", \"content\": \"You answer phone calls.\"},"
                             " {\"role\": \"user\", \"content\": \"Hi, is the shop open?\"}]",
                             "{\"sampling\": {\"temperature\": 0}}");
    attune_reply_episode_id(reply, &ep3);
    attune_reply_free(reply);

    /* Greedy generation is deterministic, and max_new_tokens is honoured. */
    {
        const char *a = NULL, *b = NULL;
        attune_reply *r1 = NULL, *r2 = NULL;
        size_t tokens = 0;
        const char *greedy = "{\"max_new_tokens\": 5, \"sampling\": {\"temperature\": 0}}";
        EXPECT_OK(attune_session_generate_unrecorded(s, ATTUNE_PROMPT_TEXT, "One two three",
                                                     greedy, NULL, NULL, &r1));
        EXPECT_OK(attune_session_generate_unrecorded(s, ATTUNE_PROMPT_TEXT, "One two three",
                                                     greedy, NULL, NULL, &r2));
        if (r1 && r2) {
            attune_reply_text(r1, &a, NULL);
            attune_reply_text(r2, &b, NULL);
            CHECK(strcmp(a, b) == 0);
            EXPECT_OK(attune_reply_token_count(r1, &tokens));
            CHECK(tokens <= 5);
            /* Unrecorded replies have no episode. */
            EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_reply_episode_id(r1, &ep1));
        }
        attune_reply_free(r1);
        attune_reply_free(r2);
    }

    /* Barge-in: the callback returns false at its 2nd piece; generation stops there. */
    stream_init(&st, 2);
    EXPECT_OK(attune_session_generate(s, ATTUNE_PROMPT_TEXT, "Tell me a long story about",
                                      "{\"max_new_tokens\": 40}", on_text, &st, &reply));
    if (reply) {
        const char *text = NULL;
        size_t len = 0;
        uint64_t barged = 0;
        EXPECT_OK(attune_reply_finish_reason(reply, &finish));
        EXPECT_OK(attune_reply_text(reply, &text, &len));
        CHECK(st.pieces == 2);
        CHECK(finish == ATTUNE_FINISH_CANCELLED);
        CHECK(len == st.len && memcmp(text, st.text, len) == 0);
        /* A barged-in reply is still an episode: the interruption is feedback too. */
        EXPECT_OK(attune_reply_episode_id(reply, &barged));
        EXPECT_OK(attune_session_feedback_thumbs(s, barged, false, &outcome));
        CHECK(outcome == ATTUNE_FEEDBACK_QUEUED);
        attune_reply_free(reply);
        reply = NULL;
    }

    /* The second reward triggers the automatic update (auto_update_after = 2). */
    EXPECT_OK(attune_session_feedback(s, ep1, 0.8, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED);
    EXPECT_OK(attune_session_last_report(s, &report));
    if (report) {
        uint32_t o = 99;
        EXPECT_OK(attune_update_report_outcome(report, &o));
        /* Two sound rewards on the tiny model: the step passes every guard. */
        CHECK(o == ATTUNE_UPDATE_ACCEPTED);
        EXPECT_OK(attune_update_report_json(report, &json));
        CHECK(json && strstr(json, "\"algorithm\"") && strstr(json, "\"outcome\""));
        attune_update_report_free(report);
        report = NULL;
    }
    /* A later signal for the same reply (a survey after the call) is learned as well: it waits
     * for the next update. */
    EXPECT_OK(attune_session_feedback(s, ep1, 0.5, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_QUEUED);

    /* Named signals, as functions and as JSON; then an explicit update. */
    EXPECT_OK(attune_session_feedback_stars(s, ep2, 4, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED || outcome == ATTUNE_FEEDBACK_SKIPPED);
    EXPECT_OK(attune_session_feedback_json(
        s, ep3, "[{\"outcome\": 1, \"weight\": 0.6}, {\"thumbs\": true, \"weight\": 0.2},"
                " {\"score\": {\"source\": \"csat\", \"value\": 4.5}, \"weight\": 0.2}]",
        &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_QUEUED);
    reply = generate_checked(s, ATTUNE_PROMPT_USER, "Thanks, bye!", NULL);
    attune_reply_episode_id(reply, &ep1);
    attune_reply_free(reply);
    EXPECT_OK(attune_session_feedback_score(s, ep1, "sentiment", 0.3, NULL));
    EXPECT_OK(attune_session_demonstrate(s, ATTUNE_PROMPT_USER, "Are you open on Sunday?",
                                         "Yes, from ten to four.", &demo));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_feedback(s, demo, 1.0, NULL));
    EXPECT_OK(attune_session_update(s, &report));
    if (report) {
        uint32_t o = 99;
        EXPECT_OK(attune_update_report_outcome(report, &o));
        EXPECT_OK(attune_update_report_json(report, &json));
        CHECK(json && strstr(json, "\"episodes\":"));
        attune_update_report_free(report);
        report = NULL;
    }
    /* Nothing left to learn from. */
    EXPECT_STATUS(ATTUNE_STATUS_LEARNING, attune_session_update(s, &report));
    CHECK(report == NULL);

    /* Statistics through a caller's buffer: a size query, a too-small buffer, then the real one. */
    EXPECT_STATUS(ATTUNE_STATUS_BUFFER_TOO_SMALL, attune_session_stats_json(s, NULL, 0, &needed));
    CHECK(needed > 10);
    EXPECT_STATUS(ATTUNE_STATUS_BUFFER_TOO_SMALL,
                  attune_session_stats_json(s, small, sizeof small, &needed));
    stats = (char *)malloc(needed);
    EXPECT_OK(attune_session_stats_json(s, stats, needed, NULL));
    CHECK(strlen(stats) + 1 == needed && strstr(stats, "\"user\":\"alice\"") &&
          strstr(stats, "\"updates\":4"));
    free(stats);

    /* Save, export, and a new session of the same user loads the saved adapter. */
    EXPECT_OK(attune_session_save(s, &version));
    CHECK(version >= 1);
    EXPECT_OK(attune_session_export(s, &bytes));
    EXPECT_OK(attune_bytes_data(bytes, &data, &data_len));
    CHECK(data && data_len > 100);
    copy = (uint8_t *)malloc(data_len);
    memcpy(copy, data, data_len);
    attune_bytes_free(bytes);
    EXPECT_OK(attune_session_save(s, &version2));
    CHECK(version2 > version);

    /* One open session per user and runtime: a second one is refused until the first is freed. */
    EXPECT_STATUS(ATTUNE_STATUS_BUSY, attune_session_new(rt, "alice", &again));
    CHECK(again == NULL && strstr(last_error(), "already has an open session") != NULL);
    EXPECT_OK(attune_session_free(s));
    s = NULL;
    REQUIRE_OK(attune_session_new(rt, "alice", &s));
    EXPECT_STATUS(ATTUNE_STATUS_BUFFER_TOO_SMALL, attune_session_stats_json(s, NULL, 0, &needed));
    stats = (char *)malloc(needed + 1);
    EXPECT_OK(attune_session_stats_json(s, stats, needed + 1, NULL));
    CHECK(strstr(stats, "\"updates\":4") != NULL); /* the counters came back from the store */
    free(stats);

    /* Rollback, reset, import into another user, forget. */
    EXPECT_OK(attune_session_rollback(s, 1));
    EXPECT_OK(attune_session_reset(s));
    EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_session_last_report(s, &report));
    EXPECT_OK(attune_session_rollback(s, 1)); /* undoes the reset */
    REQUIRE_OK(attune_session_new(rt, "bob", &again));
    EXPECT_OK(attune_session_import(again, copy, data_len));
    copy[data_len / 2] ^= 0x5a;
    {
        attune_status st2 = attune_session_import(again, copy, data_len);
        CHECK(st2 == ATTUNE_STATUS_CORRUPT_ADAPTER || st2 == ATTUNE_STATUS_STORE);
        CHECK(last_error()[0] != '\0');
    }
    free(copy);
    EXPECT_OK(attune_session_forget(again));
    EXPECT_OK(attune_session_free(again));
    EXPECT_OK(attune_runtime_forget_user(rt, "alice", &existed));
    CHECK(existed);
    EXPECT_OK(attune_runtime_forget_user(rt, "alice", &existed));
    CHECK(!existed);

    /* Logging off, then free everything. */
    EXPECT_OK(attune_set_log_callback(NULL, NULL, ATTUNE_LOG_OFF));
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    pthread_mutex_destroy(&logs.lock);
    remove_tree(store);
    free(store);
    free(config);
    return report_results("test_lifecycle");
}
