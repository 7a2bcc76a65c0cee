/* attune_session_correct through the C API on the tiny model: a correction before the reply's
 * reward and after it was learned, each learned as a pair (the update report says so) and the
 * kept ones replayed; the same after the session is freed and opened again (the pairs are read
 * back from the store and rebuilt); every bad argument a clear status (NULL session, NULL or
 * invalid UTF-8 or blank text, an unknown id, a demonstration's id, a correction equal to the
 * reply) with nothing recorded; and ATTUNE_FEEDBACK_ROLLED_BACK when a safeguard undoes the step
 * a correction triggered, the correction then waiting for the next update. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

/* Whether the session's last update report contains `needle`. */
static bool last_report_has(attune_session *s, const char *needle) {
    attune_update_report *rep = NULL;
    const char *json = NULL;
    bool ok;
    if (attune_session_last_report(s, &rep) != ATTUNE_STATUS_OK) return false;
    attune_update_report_json(rep, &json);
    ok = json && strstr(json, needle) != NULL;
    if (!ok) fprintf(stderr, "  no %s in %s\n", needle, json ? json : "(none)");
    attune_update_report_free(rep);
    return ok;
}

/* The text of the reply generated with `seed`, generated again (unrecorded, same seed, same
 * adapter: the same tokens), so the test can give a correction equal to it. */
static char *reply_text(attune_session *s, int seed) {
    char options[128];
    attune_reply *reply = NULL;
    const char *text = NULL;
    char *out = NULL;
    snprintf(options, sizeof options, "{\"max_new_tokens\": 6, \"sampling\": {\"temperature\": 1.0, \"seed\": %d}}", seed);
    EXPECT_OK(attune_session_generate_unrecorded(s, ATTUNE_PROMPT_USER, "Tell me something.", options, quiet, NULL, &reply));
    if (reply && attune_reply_text(reply, &text, NULL) == ATTUNE_STATUS_OK && text) out = strdup(text);
    attune_reply_free(reply);
    return out;
}

int main(void) {
    char *store = temp_store();
    /* Updates after every signal at the default learning rate, replaying 2 kept pairs (off by
     * default). */
    char *config = test_config_learner(store, 256, "{\"auto_update_after\": 1, \"max_updates_per_minute\": 0, \"pair_replay\": 2}");
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    uint32_t outcome = 99;
    uint64_t a, demo = 0;
    char *same;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "fixer", &s));
    a = generate_episode(s, "Tell me something.", 11);

    /* Bad arguments: a clear status, nothing recorded, out_outcome untouched. */
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_correct(NULL, a, "Sure.", &outcome));
    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_correct(s, a, NULL, &outcome));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8, attune_session_correct(s, a, "bad \xff\xfe utf-8", &outcome));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_correct(s, a, "   ", &outcome));
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_correct(s, a + 1000, "Sure.", &outcome));
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_correct(s, UINT64_MAX, "Sure.", &outcome));
    same = reply_text(s, 11);
    CHECK(same != NULL);
    if (same) EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_correct(s, a, same, &outcome));
    free(same);
    EXPECT_OK(attune_session_demonstrate(s, ATTUNE_PROMPT_USER, "Greet me", "Hello!", &demo));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_correct(s, demo, "Hi.", &outcome));
    CHECK(outcome == 99);
    EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_session_last_report(s, &(attune_update_report *){NULL}));

    /* Before the reply's reward: the correction completes a batch (with the demonstration). */
    EXPECT_OK(attune_session_correct(s, a, "Sure, here is something.", &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED);
    CHECK(last_report_has(s, "\"pairs\":1"));
    CHECK(last_report_has(s, "\"outcome\":\"accepted\""));
    /* The reply still takes its reward; that update replays the kept correction. */
    EXPECT_OK(attune_session_feedback_thumbs(s, a, false, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED);
    CHECK(last_report_has(s, "\"replayed_pairs\":1"));
    /* After the reply was learned from, it can be corrected again; out_outcome may be NULL. */
    EXPECT_OK(attune_session_correct(s, a, "Honestly, something else.", NULL));
    CHECK(last_report_has(s, "\"pairs\":2"));
    EXPECT_OK(attune_session_save(s, NULL));
    attune_session_free(s);
    s = NULL;

    /* After the session is opened again: the kept pairs come back from the store and are rebuilt. */
    REQUIRE_OK(attune_session_new(rt, "fixer", &s));
    EXPECT_OK(attune_session_correct(s, a, "After reopening.", &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED);
    CHECK(last_report_has(s, "\"pairs\":3"));
    CHECK(last_report_has(s, "\"replayed_pairs\":2"));
    CHECK(last_report_has(s, "\"rebuilt_episodes\":2"));
    attune_session_free(s);
    attune_runtime_free(rt);
    free(config);

    /* A KL budget no step fits: the step the correction triggers is rolled back, and the
     * correction waits (returned to the queue) for the next update. */
    config = test_config_learner(NULL, 256, "{\"auto_update_after\": 1, \"max_updates_per_minute\": 0, \"kl_budget\": 1e-12}");
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "strict", &s));
    a = generate_episode(s, "Tell me something.", 12);
    EXPECT_OK(attune_session_correct(s, a, "Sure, here is something.", &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_ROLLED_BACK);
    CHECK(last_report_has(s, "\"outcome\":{\"rolled_back\":\"kl_budget\"}"));
    CHECK(last_report_has(s, "\"returned_episodes\":1"));
    EXPECT_OK(attune_session_feedback_thumbs(s, a, true, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_ROLLED_BACK);
    CHECK(last_report_has(s, "\"returned_episodes\":2"));
    attune_session_free(s);
    attune_runtime_free(rt);
    free(config);
    remove_tree(store);
    free(store);
    return report_results("test_corrections");
}
