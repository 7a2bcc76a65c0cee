/* The reward sources the library computes, through the C API on the tiny model: coherence,
 * sentiment (VADER, of the reply and of a text the host passes), task checks and the host's
 * reward callback, each configured in the runtime's JSON and asked for per feedback call; every
 * one appears in the update report with its contribution. A callback that returns NaN (or an
 * infinity) is ATTUNE_STATUS_INVALID_REWARD and nothing is learned; unknown keys are refused. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

/* The callback's state: what it returns and how often it ran. */
typedef struct {
    double value;
    int calls;
    size_t last_len;
    int text_ok;
} reward_state;

static double host_reward(void *user_data, const char *text, size_t len) {
    reward_state *st = (reward_state *)user_data;
    st->calls++;
    st->last_len = len;
    st->text_ok = text != NULL && strlen(text) == len;
    return st->value;
}

/* A configuration for the tiny model with `rewards` as given. */
static char *config_with_rewards(const char *rewards) {
    char *cfg = (char *)malloc(4096);
    snprintf(cfg, 4096,
             "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [\"cpu\"], \"threads\": 2,"
             " \"max_context\": 256},"
             " \"learner\": {\"auto_update_after\": 1, \"max_updates_per_minute\": 0, \"lr\": 0.01},"
             " \"probe_prompts\": [\"Hello there.\"], \"probe_tokens\": 4, \"rewards\": %s}",
             model_dir(), rewards);
    return cfg;
}

/* The JSON of the session's last report, copied (free it), or NULL. */
static char *last_report_json(attune_session *s) {
    attune_update_report *rep = NULL;
    const char *json = NULL;
    char *copy = NULL;
    if (attune_session_last_report(s, &rep) != ATTUNE_STATUS_OK) return NULL;
    if (attune_update_report_json(rep, &json) == ATTUNE_STATUS_OK && json) {
        copy = (char *)malloc(strlen(json) + 1);
        strcpy(copy, json);
    }
    attune_update_report_free(rep);
    return copy;
}

/* Whether the report lists a reward part of `source` for episode `id`. */
static int reports_source(const char *json, uint64_t id, const char *source) {
    char want[160];
    snprintf(want, sizeof want, "{\"episode_id\":%llu,\"source\":\"%s\",", (unsigned long long)id, source);
    if (json && strstr(json, want)) return 1;
    fprintf(stderr, "  no %s part for episode %llu in %s\n", source, (unsigned long long)id, json ? json : "(none)");
    return 0;
}

/* The session's statistics (free them). */
static char *stats(attune_session *s) {
    size_t needed = 0;
    char *buf;
    attune_session_stats_json(s, NULL, 0, &needed);
    buf = (char *)malloc(needed);
    if (attune_session_stats_json(s, buf, needed, NULL) != ATTUNE_STATUS_OK) buf[0] = '\0';
    return buf;
}

static void configured_sources(void) {
    const char *rewards =
        "{\"coherence\": {\"weight\": 0.5, \"repetition\": 2},"
        " \"sentiment\": {\"weight\": 0.3},"
        " \"task\": {\"weight\": 0.2, \"checks\": [{\"avoid_word\": \"sorry\"}, {\"length\": {\"target\": 6,"
        " \"tolerance\": 6}}, {\"valid_json\": true, \"weight\": 0.5}]},"
        " \"callback\": {\"weight\": 1}}";
    char *config = config_with_rewards(rewards);
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    reward_state st = {0.25, 0, 0, 0};
    uint32_t outcome = 99;
    uint64_t id;
    char *json;
    const char *sources[4] = {"coherence", "sentiment", "task", "callback"};
    int i;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "configured", &s));
    /* The configured callback source without a callback: the feedback is refused. */
    id = generate_episode(s, "Tell me something.", 1);
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_feedback_thumbs(s, id, true, &outcome));
    CHECK(outcome == 99);
    REQUIRE_OK(attune_session_set_reward_callback(s, host_reward, &st));
    EXPECT_OK(attune_session_feedback_thumbs(s, id, true, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED || outcome == ATTUNE_FEEDBACK_SKIPPED);
    CHECK(st.calls == 1 && st.text_ok);
    json = last_report_json(s);
    if (getenv("ATTUNE_TEST_VERBOSE")) fprintf(stderr, "report: %s\n", json ? json : "(none)");
    CHECK(reports_source(json, id, "thumbs"));
    for (i = 0; i < 4; i++) CHECK(reports_source(json, id, sources[i]));
    free(json);
    /* A later signal for the same reply adds only itself: the configured sources ran once. */
    EXPECT_OK(attune_session_feedback(s, id, 0.5, &outcome));
    CHECK(st.calls == 1);
    json = last_report_json(s);
    CHECK(reports_source(json, id, "outcome"));
    CHECK(json && strstr(json, "\"source\":\"coherence\"") == NULL);
    free(json);
    /* `[]` asks for the configured sources alone. */
    id = generate_episode(s, "Tell me something else.", 2);
    EXPECT_OK(attune_session_feedback_json(s, id, "[]", &outcome));
    CHECK(st.calls == 2);
    json = last_report_json(s);
    for (i = 0; i < 4; i++) CHECK(reports_source(json, id, sources[i]));
    free(json);
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    free(config);
}

static void per_call_sources_and_errors(void) {
    char *config = config_with_rewards("{}");
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    reward_state st = {0.0, 0, 0, 0};
    uint32_t outcome = 99;
    uint64_t id;
    char *json, *before, *after;
    const char *per_call =
        "[{\"coherence\": {\"nll\": 1, \"repetition\": 4, \"cutoff\": 1, \"ngram\": 2}, \"weight\": 0.4},"
        " {\"sentiment\": {\"text\": \"Thanks, that was really helpful!\"}, \"weight\": 0.3},"
        " {\"sentiment\": \"reply\", \"weight\": 0.1},"
        " {\"task\": [{\"contains\": \"the\"}, {\"starts_with\": \"Sure\"}, {\"exact\": \"Paris\"},"
        " {\"numeric\": {\"value\": 4, \"tolerance\": 0.5}}, {\"matches\": \"[a-z]+\"}, \"valid_json\"]},"
        " {\"callback\": true, \"weight\": 0.5}]";

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "per-call", &s));
    REQUIRE_OK(attune_session_set_reward_callback(s, host_reward, &st));
    /* Without configured sources nothing is added: `[]` has no source at all. */
    id = generate_episode(s, "What is two plus two?", 3);
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, id, "[]", &outcome));
    EXPECT_OK(attune_session_feedback_json(s, id, per_call, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED || outcome == ATTUNE_FEEDBACK_SKIPPED);
    CHECK(st.calls == 1);
    json = last_report_json(s);
    CHECK(reports_source(json, id, "coherence"));
    CHECK(reports_source(json, id, "sentiment"));
    CHECK(reports_source(json, id, "task"));
    CHECK(reports_source(json, id, "callback"));
    free(json);

    /* Non-finite callback results are errors, and nothing is learned from them. */
    id = generate_episode(s, "Say something nice.", 4);
    before = stats(s);
    st.value = NAN;
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, id, "{\"callback\": true}", &outcome));
    CHECK(strstr(last_error(), "NaN") != NULL);
    st.value = INFINITY;
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD,
                  attune_session_feedback_json(s, id, "[{\"thumbs\": true}, {\"callback\": true}]", &outcome));
    after = stats(s);
    CHECK(strcmp(before, after) == 0);
    if (strcmp(before, after) != 0) fprintf(stderr, "  before: %s\n  after:  %s\n", before, after);
    free(before);
    free(after);
    CHECK(st.calls == 3);
    /* The reply still takes a usable reward afterwards. */
    st.value = -0.5;
    EXPECT_OK(attune_session_feedback_json(s, id, "{\"callback\": true}", &outcome));

    /* Shapes that are refused, with the key named. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, id, "{\"coherence\": {\"nl\": 1}}", NULL));
    CHECK(strstr(last_error(), "nl") != NULL);
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, id, "{\"task\": [{\"containz\": \"x\"}]}", NULL));
    CHECK(strstr(last_error(), "containz") != NULL);
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, id, "{\"task\": [{\"use_regex\": \"(\"}]}", NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, id, "{\"sentiment\": \"caller\"}", NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_session_feedback_json(s, id, "{\"callback\": false}", NULL));
    /* Without a callback a callback reward is refused; NULL removes it. */
    EXPECT_OK(attune_session_set_reward_callback(s, NULL, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_feedback_json(s, id, "{\"callback\": true}", NULL));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_set_reward_callback(NULL, host_reward, &st));
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    free(config);
}

static void configurations_refused(void) {
    const char *bad[] = {
        "{\"coherance\": {}}",
        "{\"sentiment\": {\"of\": \"reply\"}}",
        "{\"task\": {\"checks\": [{\"use_regex\": \"(\"}]}}",
        "{\"coherence\": {\"ngram\": 0}}",
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *config = config_with_rewards(bad[i]);
        attune_runtime *rt = NULL;
        EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(config, &rt));
        CHECK(rt == NULL);
        free(config);
    }
}

int main(void) {
    configured_sources();
    per_call_sources_and_errors();
    configurations_refused();
    return report_results("test_rewards");
}
