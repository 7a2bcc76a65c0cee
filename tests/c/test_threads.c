/* Threads: two sessions on one runtime used from two threads at once; per-thread error messages;
 * a session called from a second thread while the first is inside it gets ATTUNE_STATUS_BUSY
 * (and is not freed); and a runtime freed while another thread generates stops that generation
 * with ATTUNE_STATUS_RUNTIME_CLOSED. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "common.h"

static pthread_mutex_t g_check_lock = PTHREAD_MUTEX_INITIALIZER;

/* CHECK and EXPECT_* from several threads: serialise the counters. */
#define TCHECK(cond)                                       \
    do {                                                   \
        pthread_mutex_lock(&g_check_lock);                 \
        CHECK(cond);                                       \
        pthread_mutex_unlock(&g_check_lock);               \
    } while (0)
#define TEXPECT(expected, call)                                                \
    do {                                                                       \
        attune_status got_ = (call);                                           \
        pthread_mutex_lock(&g_check_lock);                                     \
        expect_status(got_, (attune_status)(expected), __FILE__, __LINE__, #call); \
        pthread_mutex_unlock(&g_check_lock);                                   \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Waits (up to 20 s) until *flag is nonzero. */
static int wait_for(atomic_int *flag) {
    int i;
    for (i = 0; i < 20000 && !atomic_load(flag); i++) sleep_ms(1);
    return atomic_load(flag);
}

/* ---- Two sessions, two threads ---- */

typedef struct {
    attune_runtime *rt;
    const char *user;
    int turns_ok;
    int updates;
    pthread_barrier_t *barrier;
    int fails_first; /* which thread fails first in the error-message check */
} worker_t;

static bool count_pieces(void *user_data, const char *text, size_t len) {
    (void)text;
    *(size_t *)user_data += len;
    return true;
}

static void *worker(void *arg) {
    worker_t *w = (worker_t *)arg;
    attune_session *s = NULL;
    int turn;
    char msg[512];
    attune_status st;

    TEXPECT(ATTUNE_STATUS_OK, attune_session_new(w->rt, w->user, &s));
    if (!s) return NULL;
    for (turn = 0; turn < 4; turn++) {
        attune_reply *reply = NULL;
        uint64_t ep = 0;
        uint32_t outcome = 0;
        size_t streamed = 0, len = 0;
        const char *text = NULL;
        char options[128];
        snprintf(options, sizeof options, "{\"max_new_tokens\": 8, \"sampling\": {\"seed\": %d}}", turn);
        st = attune_session_generate(s, ATTUNE_PROMPT_USER, "Where is my parcel?", options,
                                     count_pieces, &streamed, &reply);
        TEXPECT(ATTUNE_STATUS_OK, st);
        if (st != ATTUNE_STATUS_OK) continue;
        attune_reply_text(reply, &text, &len);
        attune_reply_episode_id(reply, &ep);
        attune_reply_free(reply);
        TCHECK(streamed == len);
        TEXPECT(ATTUNE_STATUS_OK, attune_session_feedback(s, ep, turn % 2 ? 1.0 : -0.5, &outcome));
        if (outcome == ATTUNE_FEEDBACK_UPDATED) w->updates++;
        w->turns_ok++;
    }

    /* Per-thread messages: each thread fails differently while the other one waits, then checks
     * that its own message survived the other thread's failure. */
    pthread_barrier_wait(w->barrier);
    if (w->fails_first) {
        TEXPECT(ATTUNE_STATUS_UNKNOWN_EPISODE, attune_session_feedback(s, 424242, 1.0, NULL));
    }
    pthread_barrier_wait(w->barrier);
    if (!w->fails_first) {
        TEXPECT(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_rollback(s, 0));
    }
    pthread_barrier_wait(w->barrier);
    attune_last_error_message(msg, sizeof msg, NULL);
    TCHECK(w->fails_first ? strstr(msg, "424242") != NULL : strstr(msg, "step") != NULL);

    TEXPECT(ATTUNE_STATUS_OK, attune_session_save(s, NULL));
    TEXPECT(ATTUNE_STATUS_OK, attune_session_free(s));
    return NULL;
}

static void two_sessions_two_threads(attune_runtime *rt) {
    pthread_t a, b;
    pthread_barrier_t barrier;
    worker_t wa, wb;
    memset(&wa, 0, sizeof wa);
    memset(&wb, 0, sizeof wb);
    pthread_barrier_init(&barrier, NULL, 2);
    wa.rt = wb.rt = rt;
    wa.barrier = wb.barrier = &barrier;
    wa.user = "caller-a";
    wb.user = "caller-b";
    wa.fails_first = 1;
    pthread_create(&a, NULL, worker, &wa);
    pthread_create(&b, NULL, worker, &wb);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&barrier);
    CHECK(wa.turns_ok == 4 && wb.turns_ok == 4);
    CHECK(wa.updates == 2 && wb.updates == 2); /* auto_update_after = 2 */
}

/* ---- A session held by one thread, called from another ---- */

typedef struct {
    attune_session *s;
    atomic_int started;  /* the callback is running */
    atomic_int proceed;  /* main is done; the callback may return */
    atomic_int done;
    attune_status status;
    int pieces;
} holder_t;

static bool hold(void *user_data, const char *text, size_t len) {
    holder_t *h = (holder_t *)user_data;
    (void)text;
    (void)len;
    if (h->pieces++ == 0) {
        atomic_store(&h->started, 1);
        wait_for(&h->proceed);
    }
    return true;
}

static void *hold_session(void *arg) {
    holder_t *h = (holder_t *)arg;
    attune_reply *reply = NULL;
    h->status = attune_session_generate(h->s, ATTUNE_PROMPT_TEXT, "It was a dark and stormy night",
                                        "{\"max_new_tokens\": 16}", hold, h, &reply);
    attune_reply_free(reply);
    atomic_store(&h->done, 1);
    return NULL;
}

static void busy_from_another_thread(attune_runtime *rt) {
    attune_session *s = NULL, *other = NULL;
    attune_reply *reply = NULL;
    pthread_t t;
    holder_t h;

    REQUIRE_OK(attune_session_new(rt, "busy-user", &s));
    REQUIRE_OK(attune_session_new(rt, "other-user", &other));
    memset(&h, 0, sizeof h);
    h.s = s;
    pthread_create(&t, NULL, hold_session, &h);
    CHECK(wait_for(&h.started));
    EXPECT_STATUS(ATTUNE_STATUS_BUSY, attune_session_save(s, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_BUSY, attune_session_feedback(s, 0, 1.0, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_BUSY,
                  attune_session_generate(s, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &reply));
    EXPECT_STATUS(ATTUNE_STATUS_BUSY, attune_session_free(s)); /* refused, not freed */
    CHECK(reply == NULL);
    /* Another session of the same runtime works meanwhile. */
    EXPECT_OK(attune_session_generate(other, ATTUNE_PROMPT_TEXT, "hi", "{\"max_new_tokens\": 4}",
                                      NULL, NULL, &reply));
    attune_reply_free(reply);
    atomic_store(&h.proceed, 1);
    pthread_join(t, NULL);
    CHECK(h.status == ATTUNE_STATUS_OK);
    EXPECT_OK(attune_session_save(s, NULL)); /* free again after the other call ended */
    EXPECT_OK(attune_session_free(s));
    EXPECT_OK(attune_session_free(other));
}

/* ---- The runtime freed while another thread generates ---- */

static void runtime_freed_during_generation(const char *config) {
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    pthread_t t;
    holder_t h;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "late-user", &s));
    memset(&h, 0, sizeof h);
    h.s = s;
    pthread_create(&t, NULL, hold_session, &h);
    CHECK(wait_for(&h.started));
    attune_runtime_free(rt); /* the generating thread still holds the model */
    atomic_store(&h.proceed, 1);
    pthread_join(t, NULL);
    CHECK(h.pieces == 1); /* stopped at its next piece */
    CHECK(h.status == ATTUNE_STATUS_RUNTIME_CLOSED);
    EXPECT_STATUS(ATTUNE_STATUS_RUNTIME_CLOSED, attune_session_save(s, NULL));
    EXPECT_OK(attune_session_free(s)); /* the last reference: the model is released here */
}

int main(void) {
    char *store = temp_store();
    char *config = test_config(store, 2, 256);
    attune_runtime *rt = NULL;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    two_sessions_two_threads(rt);
    busy_from_another_thread(rt);
    attune_runtime_free(rt);
    runtime_freed_during_generation(config);

    remove_tree(store);
    free(store);
    free(config);
    return report_results("test_threads");
}
