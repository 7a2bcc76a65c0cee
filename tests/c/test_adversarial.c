/* Adversarial reward streams through the C API, on the model in $ATTUNE_TEST_MODEL (the real model
 * in `make test`): always -1, random, sign flipping, and a burst of 1000 rewards as fast as the API
 * takes them with NaN, infinities and huge values mixed in. Nothing crashes, bad values are
 * rejected with INVALID_REWARD and change nothing, the adapter stays finite, and the probe KL stays
 * within the budget. Prints the figures. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

static uint64_t gen(attune_session *s, int seed) { return generate_episode(s, "How do I keep my houseplants alive?", seed); }

/* A number from the session's statistics JSON: the value after `key`, searched after the last
 * occurrence of `after` (the top-level "probe" object comes after the one inside "last_update"). */
static double stat(attune_session *s, const char *after, const char *key) {
    static char buf[1 << 16];
    const char *p = NULL, *q;
    if (attune_session_stats_json(s, buf, sizeof buf, NULL) != ATTUNE_STATUS_OK) return NAN;
    for (q = strstr(buf, after); q; q = strstr(q + 1, after)) p = q;
    if (!p) return NAN;
    p = strstr(p, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

static int is_true(attune_session *s, const char *key) {
    static char buf[1 << 16];
    const char *p;
    if (attune_session_stats_json(s, buf, sizeof buf, NULL) != ATTUNE_STATUS_OK) return 0;
    p = strstr(buf, key);
    return p && strncmp(p + strlen(key), "true", 4) == 0;
}

static unsigned long long lcg = 12345;
static double uniform(void) {
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg >> 11) / 9007199254740992.0;
}

int main(void) {
    char *store = temp_store();
    char config[2048];
    const char *names[3] = {"always -1", "random", "sign flipping"};
    attune_runtime *rt = NULL;
    int k, i;
    snprintf(config, sizeof config,
             "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [\"cpu\"], \"threads\": 2, \"max_context\": 256},"
             " \"store\": {\"dir\": \"%s\"}, \"probe_tokens\": 8}",
             model_dir(), store);
    REQUIRE_OK(attune_runtime_new(config, &rt));
    for (k = 0; k < 4; k++) {
        attune_session *s = NULL;
        char user[32];
        uint64_t ids[24];
        int accepted = 0, rejected = 0, other = 0;
        snprintf(user, sizeof user, "adversary-%d", k);
        REQUIRE_OK(attune_session_new(rt, user, &s));
        for (i = 0; i < 24; i++) ids[i] = gen(s, 100 * k + i);
        if (k < 3) {
            /* 120 rewards of one kind over the 24 replies (several signals per reply). */
            for (i = 0; i < 120; i++) {
                double r = k == 0 ? -1.0 : k == 1 ? (uniform() < 0.5 ? 1.0 : -1.0) : (i % 2 ? 1.0 : -1.0);
                attune_status st = attune_session_feedback(s, ids[i % 24], r, NULL);
                if (st == ATTUNE_STATUS_OK) accepted++; else other++;
            }
        } else {
            /* 1000 rewards as fast as the API takes them, bad values mixed in. */
            for (i = 0; i < 1000; i++) {
                double r;
                attune_status st;
                switch (i % 10) {
                case 3: r = NAN; break;
                case 5: r = INFINITY; break;
                case 6: r = -INFINITY; break;
                case 8: r = 1e30; break;
                default: r = uniform() * 2.0 - 1.0;
                }
                st = attune_session_feedback(s, ids[i % 24], r, NULL);
                if (st == ATTUNE_STATUS_OK) accepted++;
                else if (st == ATTUNE_STATUS_INVALID_REWARD) rejected++;
                else other++;
            }
            CHECK(rejected == 400);
            EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, ids[0], "{\"outcome\": 1e300}", NULL));
            EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_stars(s, ids[0], 0, NULL));
        }
        /* Rewards waiting behind the rate limit are learned, or nothing is ready. */
        {
            attune_update_report *rep = NULL;
            attune_status st = attune_session_update(s, &rep);
            CHECK(st == ATTUNE_STATUS_OK || st == ATTUNE_STATUS_LEARNING);
            attune_update_report_free(rep);
        }
        CHECK(other == 0);
        CHECK(is_true(s, "\"adapter_finite\":"));
        {
            double kl = stat(s, "\"probe\":{", "\"kl\":"), updates = stat(s, "\"counters\":", "\"updates\":"),
                   rolled = stat(s, "\"counters\":", "\"rolled_back\":");
            CHECK(kl == kl && kl >= 0.0 && kl <= 0.1 + 1e-9);
            printf("%s: %d rewards accepted, %d rejected; %.0f updates, %.0f rolled back; probe KL %.5f\n",
                   k < 3 ? names[k] : "burst of 1000 with NaN/inf/huge", accepted, rejected, updates, rolled, kl);
        }
        EXPECT_OK(attune_session_save(s, NULL));
        EXPECT_OK(attune_session_free(s));
    }
    attune_runtime_free(rt);
    remove_tree(store);
    free(store);
    return report_results("test_adversarial");
}
