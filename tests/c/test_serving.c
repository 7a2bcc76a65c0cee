/* Call-grade serving. attune_session_cancel from a second thread: during the prefill of a long
 * prompt (prefilled in chunks of 8 tokens) the reply ends ATTUNE_FINISH_CANCELLED with no token
 * and no episode, after part of the prompt; during the decode at most one more piece of text is
 * streamed after the cancel returned, and the episode takes feedback. A cancel while nothing runs
 * stops nothing, and a cancel never returns ATTUNE_STATUS_BUSY while a generation holds the
 * session. With "update_mode": "background" feedback returns QUEUED, the update's report appears
 * after attune_session_flush, feedback given while the update runs is learned by the next one,
 * and an invalid one of them is reported by the flush. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "common.h"

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

typedef struct {
    attune_session *s;
    const char *prompt;
    const char *options;
    atomic_int pieces; /* text pieces streamed so far */
    atomic_int done;
    attune_status status;
    attune_reply *reply;
} gen_t;

static bool count_piece(void *user_data, const char *text, size_t len) {
    (void)text;
    (void)len;
    atomic_fetch_add(&((gen_t *)user_data)->pieces, 1);
    return true;
}

static void *generate_thread(void *arg) {
    gen_t *g = (gen_t *)arg;
    g->status = attune_session_generate(g->s, ATTUNE_PROMPT_USER, g->prompt, g->options, count_piece, g, &g->reply);
    atomic_store(&g->done, 1);
    return NULL;
}

/* The number after "key": in a JSON text, or -1. */
static long json_number(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static void cancel_during_prefill(attune_session *s, const char *long_prompt) {
    gen_t g = {s, long_prompt, "{\"max_new_tokens\": 8, \"prefill_chunk\": 8}", 0, 0, 0, NULL};
    pthread_t t;
    bool stopped = false;
    int tries = 0;
    pthread_create(&t, NULL, generate_thread, &g);
    /* Cancel as soon as the generation runs: it starts with the prefill. */
    while (!stopped && !atomic_load(&g.done) && tries++ < 200000) {
        attune_status st = attune_session_cancel(s, &stopped);
        CHECK(st == ATTUNE_STATUS_OK); /* never BUSY, although the generation holds the session */
        if (!stopped) sleep_ms(0);
    }
    pthread_join(t, NULL);
    CHECK(stopped);
    EXPECT_OK(g.status);
    if (g.reply) {
        uint32_t finish = 99;
        size_t tokens = 99;
        uint64_t id = 0;
        const char *json = NULL;
        EXPECT_OK(attune_reply_finish_reason(g.reply, &finish));
        EXPECT_OK(attune_reply_token_count(g.reply, &tokens));
        EXPECT_OK(attune_reply_json(g.reply, &json));
        CHECK(finish == ATTUNE_FINISH_CANCELLED);
        CHECK(tokens == 0);
        CHECK(atomic_load(&g.pieces) == 0);
        EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_reply_episode_id(g.reply, &id));
        long prefilled = json_number(json, "prefilled_tokens");
        printf("cancel during the prefill: %ld prompt tokens ran before it stopped\n", prefilled);
        /* Part of a prompt of more than 1000 tokens ran: the cancel landed inside the prefill. */
        CHECK(prefilled >= 0 && prefilled < 1000);
        attune_reply_free(g.reply);
    }
}

static void cancel_during_decode(attune_session *s) {
    gen_t g = {s, "Tell me a very long story about a lighthouse keeper.",
               "{\"max_new_tokens\": 400, \"sampling\": {\"temperature\": 1.0, \"seed\": 11}}", 0, 0, 0, NULL};
    pthread_t t;
    bool stopped = false;
    int at_cancel = -1;
    pthread_create(&t, NULL, generate_thread, &g);
    while (!atomic_load(&g.done)) {
        if (atomic_load(&g.pieces) >= 3) {
            EXPECT_OK(attune_session_cancel(s, &stopped));
            at_cancel = atomic_load(&g.pieces);
            break;
        }
        sleep_ms(0);
    }
    pthread_join(t, NULL);
    CHECK(stopped);
    EXPECT_OK(g.status);
    if (g.reply) {
        uint32_t finish = 99;
        size_t tokens = 0;
        uint64_t id = UINT64_MAX;
        uint32_t outcome = 99;
        int after = atomic_load(&g.pieces) - at_cancel;
        EXPECT_OK(attune_reply_finish_reason(g.reply, &finish));
        EXPECT_OK(attune_reply_token_count(g.reply, &tokens));
        CHECK(finish == ATTUNE_FINISH_CANCELLED);
        printf("cancel during the decode: %d piece(s) streamed after it, %zu tokens in the reply\n", after, tokens);
        CHECK(at_cancel >= 3 && after >= 0 && after <= 1);
        CHECK(tokens >= 3 && tokens < 400);
        EXPECT_OK(attune_reply_episode_id(g.reply, &id));
        EXPECT_OK(attune_session_feedback_thumbs(s, id, false, &outcome));
        attune_reply_free(g.reply);
    }
}

/* Whether the report's JSON lists `id` in "episode_ids". */
static int report_lists(attune_update_report *r, uint64_t id) {
    const char *json = NULL;
    char want[64];
    if (attune_update_report_json(r, &json) != ATTUNE_STATUS_OK) return 0;
    snprintf(want, sizeof want, "\"episode_ids\":[%llu]", (unsigned long long)id);
    return strstr(json, want) != NULL;
}

static void background_learning(void) {
    char *base = test_config(NULL, 1, 256);
    char config[4300];
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    attune_update_report *report = NULL;
    uint32_t outcome = 99;
    uint64_t a, b;
    /* The same configuration with the updates on the learning thread. */
    snprintf(config, sizeof config, "{\"update_mode\": \"background\", %s", base + 1);
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "background", &s));
    EXPECT_STATUS(ATTUNE_STATUS_NOT_FOUND, attune_session_last_report(s, &report));
    a = generate_episode(s, "Hello?", 1);
    b = generate_episode(s, "How are you?", 2);
    EXPECT_OK(attune_session_feedback_thumbs(s, a, true, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_QUEUED);
    /* Given while a's update runs (or just after it landed): learned by the next update. */
    EXPECT_OK(attune_session_feedback_thumbs(s, b, false, &outcome));
    CHECK(outcome == ATTUNE_FEEDBACK_QUEUED);
    EXPECT_OK(attune_session_flush(s));
    EXPECT_OK(attune_session_last_report(s, &report));
    if (report) {
        CHECK(report_lists(report, b));
        attune_update_report_free(report);
        report = NULL;
    }
    /* An invalid reward is refused at once when no update runs. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback(s, a, NAN, &outcome));
    EXPECT_OK(attune_session_flush(s));
    EXPECT_OK(attune_session_flush(s));
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    free(base);
}

int main(void) {
    char *config = test_config(NULL, 0, 2048);
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    attune_reply *reply = NULL;
    bool stopped = true;
    uint32_t finish = 99;
    size_t i, n = 0;
    char *long_prompt = (char *)malloc(16000);

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "caller", &s));
    long_prompt[0] = '\0';
    for (i = 0; i < 1500; i++) n += (size_t)snprintf(long_prompt + n, 16000 - n, "%s ", i % 2 ? "order" : "the");

    /* Nothing runs: the cancel does nothing, and the next generation is not stopped. */
    EXPECT_OK(attune_session_cancel(s, &stopped));
    CHECK(!stopped);
    EXPECT_OK(attune_session_cancel(s, NULL));
    EXPECT_OK(attune_session_generate(s, ATTUNE_PROMPT_USER, "Hello?", "{\"max_new_tokens\": 4}", NULL, NULL, &reply));
    if (reply) {
        EXPECT_OK(attune_reply_finish_reason(reply, &finish));
        CHECK(finish != ATTUNE_FINISH_CANCELLED);
        attune_reply_free(reply);
    }

    cancel_during_prefill(s, long_prompt);
    cancel_during_decode(s);
    /* The session works on after both cancels. */
    CHECK(generate_episode(s, "Hello again.", 3) != UINT64_MAX);

    EXPECT_STATUS(ATTUNE_STATUS_NULL_ARGUMENT, attune_session_cancel(NULL, &stopped));
    EXPECT_OK(attune_session_free(s));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_cancel(s, &stopped));
    attune_runtime_free(rt);
    free(long_prompt);
    free(config);
    background_learning();
    return report_results("test_serving");
}
