/* A short pass over the C API for valgrind (memcheck is ~50x slower than native, so this stays
 * small): runtime, session, a streamed and barged-in generation, feedback, an update and its
 * report, save and export, a few failures, and every free. Memory errors and definite leaks fail
 * the run (see the Makefile's valgrind flags). */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

static bool stop_at_two(void *user_data, const char *text, size_t len) {
    int *pieces = (int *)user_data;
    (void)text;
    (void)len;
    return ++*pieces < 2;
}

int main(void) {
    char *store = temp_store();
    char *config = test_config(store, 1, 128);
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    attune_reply *reply = NULL;
    attune_update_report *report = NULL;
    attune_bytes *bytes = NULL;
    const char *json = NULL;
    const uint8_t *data = NULL;
    size_t len = 0;
    uint64_t ep = 0;
    uint32_t outcome = 0;
    int pieces = 0;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "valgrind", &s));
    EXPECT_OK(attune_session_generate(s, ATTUNE_PROMPT_USER, "Hello?", "{\"max_new_tokens\": 6}",
                                      stop_at_two, &pieces, &reply));
    EXPECT_OK(attune_reply_episode_id(reply, &ep));
    EXPECT_OK(attune_reply_json(reply, &json));
    CHECK(json != NULL && pieces <= 2);
    attune_reply_free(reply);
    EXPECT_OK(attune_session_feedback_json(s, ep, "{\"outcome\": 1}", &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_UPDATED);
    EXPECT_OK(attune_session_last_report(s, &report));
    EXPECT_OK(attune_update_report_json(report, &json));
    attune_update_report_free(report);
    EXPECT_OK(attune_session_export(s, &bytes));
    EXPECT_OK(attune_bytes_data(bytes, &data, &len));
    EXPECT_OK(attune_session_import(s, data, len));
    attune_bytes_free(bytes);
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_UTF8, attune_session_new(rt, "\xff", &(attune_session *){NULL}));
    EXPECT_STATUS(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_feedback(s, ep + 100, 0.5, NULL)); /* never issued */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_JSON, attune_runtime_new("{", &(attune_runtime *){NULL}));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ENUM,
                  attune_session_generate(s, 9, "hi", NULL, NULL, NULL, &reply));
    attune_runtime_free(rt);
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED, attune_session_save(s, NULL));
    EXPECT_OK(attune_session_free(s));
    remove_tree(store);
    free(store);
    free(config);
    return report_results("test_valgrind");
}
