/* Helpers shared by the C tests of libattune: checks that print the library's message, a
 * configuration for the tiny model, and the closing "N passed, N failed" line. */
#ifndef ATTUNE_TEST_COMMON_H
#define ATTUNE_TEST_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attune.h"

static int g_passed = 0;
static int g_failed = 0;

/* The calling thread's last error message (a static buffer: tests read it at once). */
static inline const char *last_error(void) {
    static char buf[1024];
    size_t needed = 0;
    if (attune_last_error_message(buf, sizeof buf, &needed) != ATTUNE_STATUS_OK) {
        snprintf(buf, sizeof buf, "(message of %zu bytes did not fit)", needed);
    }
    return buf;
}

static inline void record(int ok, const char *file, int line, const char *what) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
    }
}

/* A condition. */
#define CHECK(cond) record((cond) ? 1 : 0, __FILE__, __LINE__, #cond)

/* A status that must be `want`; a failure also needs a nonempty message. */
static inline void expect_status(attune_status got, attune_status want, const char *file, int line,
                                 const char *what) {
    int ok = got == want;
    if (ok && got != ATTUNE_STATUS_OK) ok = last_error()[0] != '\0';
    if (!ok) {
        fprintf(stderr, "  got %s (%u), wanted %s: %s\n", attune_status_name(got), (unsigned)got,
                attune_status_name(want), last_error());
    }
    record(ok, file, line, what);
}

/* A call that must return `expected`. */
#define EXPECT_STATUS(expected, call) \
    expect_status((call), (attune_status)(expected), __FILE__, __LINE__, #call)

#define EXPECT_OK(call) EXPECT_STATUS(ATTUNE_STATUS_OK, call)

/* A call that must succeed for the test to go on at all. */
#define REQUIRE_OK(call)                                                                   \
    do {                                                                                   \
        attune_status st_ = (call);                                                        \
        if (st_ != ATTUNE_STATUS_OK) {                                                     \
            fprintf(stderr, "FATAL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,      \
                    attune_status_name(st_), last_error());                                \
            exit(2);                                                                       \
        }                                                                                  \
        g_passed++;                                                                        \
    } while (0)

/* The model folder: $ATTUNE_TEST_MODEL, or models/tiny (tests run from the repository root). */
static inline const char *model_dir(void) {
    const char *d = getenv("ATTUNE_TEST_MODEL");
    return d && d[0] ? d : "models/tiny";
}

/* A configuration for the tiny model: CPU, 2 threads, a small KV cache, short probes, and the
 * learner settings `learner` (a JSON object). `store_dir` NULL: no store. */
static inline char *test_config_generation(const char *store_dir, int max_context, const char *learner, const char *generation) {
    char *buf = (char *)malloc(4096);
    char store[1200];
    if (store_dir) {
        snprintf(store, sizeof store, "{\"dir\": \"%s\", \"keep_versions\": 4}", store_dir);
    } else {
        snprintf(store, sizeof store, "{}");
    }
    snprintf(buf, 4096,
             "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [\"cpu\"], "
             "\"threads\": 2, \"max_context\": %d},"
             " \"store\": %s,"
             " \"learner\": %s,"
             " \"generation\": %s,"
             " \"probe_prompts\": [\"Hello there.\"], \"probe_tokens\": 4}",
             model_dir(), max_context, store, learner, generation);
    return buf;
}

/* test_config_generation with 12 new tokens sampled at temperature 0.8, seed 7. */
static inline char *test_config_learner(const char *store_dir, int max_context, const char *learner) {
    return test_config_generation(store_dir, max_context, learner,
                                  "{\"max_new_tokens\": 12, \"sampling\": {\"temperature\": 0.8, \"seed\": 7}}");
}

/* test_config_learner with no rate limit, no same-sign cap, lr 0.01 and an update after every
 * `auto_update_after` rewards. */
static inline char *test_config(const char *store_dir, int auto_update_after, int max_context) {
    char learner[256];
    snprintf(learner, sizeof learner,
             "{\"auto_update_after\": %d, \"max_updates_per_minute\": 0, \"max_same_sign_run\": 0, \"lr\": 0.01}",
             auto_update_after);
    return test_config_learner(store_dir, max_context, learner);
}

/* A fresh temporary directory for an adapter store. */
static inline char *temp_store(void) {
    char *path = (char *)malloc(64);
    strcpy(path, "/tmp/attune-ctest-XXXXXX");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(2);
    }
    return path;
}

static inline void remove_tree(const char *path) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

/* A text callback that takes every piece and never stops generation. */
static inline bool quiet(void *user_data, const char *text, size_t len) {
    (void)user_data;
    (void)text;
    (void)len;
    return true;
}

/* Generates a short sampled reply (6 tokens, temperature 1, `seed`) to `prompt` and returns its
 * episode id, or UINT64_MAX after recording the failure. */
static inline uint64_t generate_episode(attune_session *s, const char *prompt, int seed) {
    char options[128];
    attune_reply *reply = NULL;
    uint64_t id = UINT64_MAX;
    snprintf(options, sizeof options, "{\"max_new_tokens\": 6, \"sampling\": {\"temperature\": 1.0, \"seed\": %d}}", seed);
    EXPECT_OK(attune_session_generate(s, ATTUNE_PROMPT_USER, prompt, options, quiet, NULL, &reply));
    if (reply) {
        EXPECT_OK(attune_reply_episode_id(reply, &id));
        attune_reply_free(reply);
    }
    return id;
}

/* Prints the closing line and returns the exit status. */
static inline int report_results(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

#endif
