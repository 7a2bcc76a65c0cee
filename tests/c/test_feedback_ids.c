/* Feedback lands where the user meant it, through the C API on the tiny model: generate two
 * replies, give feedback, save, generate, roll back one version, generate, export, import, reset,
 * free the session and open it again, free the runtime and open a new one, generating one reply
 * after each step. Every episode id is unique, and feedback for an id issued before the rollback,
 * the reset and the restart trains that reply (its update report lists the id) or is
 * UNKNOWN_EPISODE; it never reaches another reply. Also: delayed feedback for five replies after
 * a restart, and an expired id refused with its reason. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "common.h"

static uint64_t gen(attune_session *s, int seed) { return generate_episode(s, "Tell me something.", seed); }

/* Whether the JSON report of the session's last update lists exactly `id` as its episode. */
static bool last_update_was(attune_session *s, uint64_t id) {
    attune_update_report *rep = NULL;
    const char *json = NULL;
    char want[64];
    bool ok;
    if (attune_session_last_report(s, &rep) != ATTUNE_STATUS_OK) return false;
    attune_update_report_json(rep, &json);
    snprintf(want, sizeof want, "\"episode_ids\":[%llu]", (unsigned long long)id);
    ok = json && strstr(json, want) != NULL;
    if (!ok) fprintf(stderr, "  report for %llu: %s\n", (unsigned long long)id, json ? json : "(none)");
    attune_update_report_free(rep);
    return ok;
}

int main(void) {
    char *store = temp_store();
    char *config = test_config_learner(store, 256, "{\"max_updates_per_minute\": 0}");
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    attune_bytes *exported = NULL;
    const uint8_t *data = NULL;
    size_t len = 0, i, j;
    uint64_t ids[16], before_rollback, before_reset, before_restart;
    size_t n = 0;
    uint32_t outcome = 99;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "caller", &s));
    ids[n++] = gen(s, 1);
    ids[n++] = gen(s, 2);
    EXPECT_OK(attune_session_feedback_thumbs(s, ids[0], true, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED);
    EXPECT_OK(attune_session_save(s, NULL));
    ids[n++] = gen(s, 3);
    EXPECT_OK(attune_session_feedback_thumbs(s, ids[2], false, NULL));
    EXPECT_OK(attune_session_save(s, NULL));
    before_rollback = gen(s, 4);
    ids[n++] = before_rollback;
    EXPECT_OK(attune_session_rollback(s, 1));
    /* The last report described the adapter the rollback replaced. */
    EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_session_last_report(s, &(attune_update_report *){NULL}));
    ids[n++] = gen(s, 5);
    EXPECT_OK(attune_session_export(s, &exported));
    EXPECT_OK(attune_bytes_data(exported, &data, &len));
    EXPECT_OK(attune_session_import(s, data, len));
    attune_bytes_free(exported);
    ids[n++] = gen(s, 6);
    before_reset = gen(s, 7);
    ids[n++] = before_reset;
    EXPECT_OK(attune_session_reset(s));
    ids[n++] = gen(s, 8);
    EXPECT_OK(attune_session_free(s));
    REQUIRE_OK(attune_session_new(rt, "caller", &s));
    before_restart = gen(s, 9);
    ids[n++] = before_restart;
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    rt = NULL;
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "caller", &s));
    ids[n++] = gen(s, 10);
    for (i = 0; i < n; i++) {
        CHECK(ids[i] != UINT64_MAX);
        for (j = i + 1; j < n; j++) CHECK(ids[i] != ids[j]);
    }
    printf("ids:");
    for (i = 0; i < n; i++) printf(" %llu", (unsigned long long)ids[i]);
    printf("\n");

    /* Old ids train their own reply. */
    EXPECT_OK(attune_session_feedback_thumbs(s, before_rollback, true, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED || outcome == ATTUNE_FEEDBACK_SKIPPED);
    CHECK(last_update_was(s, before_rollback));
    EXPECT_OK(attune_session_feedback(s, before_reset, -0.5, &outcome));
    CHECK(last_update_was(s, before_reset));
    EXPECT_OK(attune_session_feedback_json(s, before_restart, "[{\"outcome\": 1, \"weight\": 0.7}, {\"stars\": 5, \"weight\": 0.3}]", &outcome));
    CHECK(last_update_was(s, before_restart));
    /* A later signal for a reply already learned from is learned too. */
    EXPECT_OK(attune_session_feedback_stars(s, before_restart, 2, &outcome));
    CHECK(last_update_was(s, before_restart));
    /* An id never issued names no reply. */
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_feedback_thumbs(s, ids[n - 1] + 1000, true, NULL));
    CHECK(strstr(last_error(), "no episode with this id") != NULL);
    EXPECT_OK(attune_session_free(s));
    /* A freed session is an error, not a use after free. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_free(s));
    attune_runtime_free(rt);
    free(config);
    remove_tree(store);
    free(store);

    /* Delayed feedback: five replies, the runtime freed without a save, a new runtime on the same
     * store, feedback for the five ids, then one update that uses them all. */
    store = temp_store();
    config = test_config_learner(store, 256, "{\"max_updates_per_minute\": 0, \"auto_update_after\": 0}");
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "+1 555 0100", &s));
    for (i = 0; i < 5; i++) ids[i] = gen(s, 20 + (int)i);
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "+1 555 0100", &s));
    for (i = 0; i < 5; i++) {
        EXPECT_OK(attune_session_feedback_thumbs(s, ids[i], i % 2 == 0, &outcome));
        CHECK(outcome == ATTUNE_FEEDBACK_QUEUED);
    }
    {
        attune_update_report *rep = NULL;
        const char *json = NULL;
        char want[128];
        EXPECT_OK(attune_session_update(s, &rep));
        EXPECT_OK(attune_update_report_json(rep, &json));
        snprintf(want, sizeof want, "\"episode_ids\":[%llu,%llu,%llu,%llu,%llu]", (unsigned long long)ids[0],
                 (unsigned long long)ids[1], (unsigned long long)ids[2], (unsigned long long)ids[3],
                 (unsigned long long)ids[4]);
        CHECK(json && strstr(json, want) != NULL);
        CHECK(json && strstr(json, "\"rebuilt_episodes\":5") != NULL);
        attune_update_report_free(rep);
    }
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    free(config);
    remove_tree(store);
    free(store);

    /* Expiry: a one-second time to live. */
    store = temp_store();
    config = test_config_learner(store, 256, "{\"max_updates_per_minute\": 0, \"episode_ttl_s\": 1}");
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "u", &s));
    ids[0] = gen(s, 30);
    sleep(3);
    ids[1] = gen(s, 31);
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_feedback_thumbs(s, ids[0], true, NULL));
    CHECK(strstr(last_error(), "expired") != NULL);
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    free(config);
    remove_tree(store);
    free(store);
    return report_results("test_feedback_ids");
}
