/* What a careless or hostile host can do through the C API, on the tiny model, under
 * AddressSanitizer: every number it passes has a range checked where it enters, and handles are
 * never reused. Each case asserts the exact status, and the process lives:
 *  - `learner.adapter.top_k` of 1e12 (once an 8 TB allocation and an abort), above the
 *    vocabulary, or 0: ATTUNE_STATUS_CONFIG naming the field;
 *  - a subnormal or tiny temperature (once NaN softmax): CONFIG in the runtime's settings,
 *    INVALID_ARGUMENT in a generate call's options; 0 stays greedy;
 *  - absurd reward weights and scores (once a poisoned baseline): INVALID_REWARD, nothing recorded;
 *  - 64 free/new session cycles: no handle value repeats, and a stale (freed) or forged handle is
 *    INVALID_ARGUMENT for every call while another user's session is open, which it never touches;
 *    a freed runtime's handle likewise;
 *  - import bytes whose header states hostile dimensions (a vocabulary of 2^32 - 1 over a few
 *    kilobytes of data, another hidden size, a huge top_k): CORRUPT_ADAPTER before anything of that
 *    size is allocated, while the same bytes re-encoded with the model's dimensions import. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>

#include "common.h"

#define CYCLES 64

/* A tiny-model configuration with `learner_extra` added to the learner section (may be "") and the
 * runtime's sampling temperature `temperature` (JSON number text). */
static char *config_with(const char *store_dir, const char *learner_extra, const char *temperature) {
    char learner[1024], generation[256];
    snprintf(learner, sizeof learner,
             "{\"auto_update_after\": 0, \"max_updates_per_minute\": 0, \"max_same_sign_run\": 0, \"lr\": 0.01%s%s}",
             learner_extra[0] ? ", " : "", learner_extra);
    snprintf(generation, sizeof generation, "{\"max_new_tokens\": 6, \"sampling\": {\"temperature\": %s, \"seed\": 7}}", temperature);
    return test_config_generation(store_dir, 128, learner, generation);
}

static int error_mentions(const char *a, const char *b) {
    const char *m = last_error();
    return strstr(m, a) != NULL && (b == NULL || strstr(m, b) != NULL);
}

/* ---- Configuration: top_k and the temperature ---- */

static void configuration_ranges(void) {
    attune_runtime *rt = (attune_runtime *)0x5a5a;
    char *cfg;

    cfg = config_with(NULL, "\"adapter\": {\"top_k\": 1000000000000}", "0.8");
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    CHECK(error_mentions("learner.adapter.top_k", "1..=1048576"));
    free(cfg);
    /* Within the absolute cap but above the tiny model's vocabulary: refused when the model is
     * loaded, naming the vocabulary. */
    cfg = config_with(NULL, "\"adapter\": {\"top_k\": 1048576}", "0.8");
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    CHECK(error_mentions("learner.adapter.top_k", "vocabulary"));
    free(cfg);
    cfg = config_with(NULL, "\"adapter\": {\"top_k\": 0}", "0.8");
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    free(cfg);
    /* A thread count no device has. */
    {
        char big[4096];
        char *base = config_with(NULL, "", "0.8");
        char *at = strstr(base, "\"threads\": 2");
        snprintf(big, sizeof big, "%.*s\"threads\": 1000000000%s", (int)(at - base), base, at + strlen("\"threads\": 2"));
        EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(big, &rt));
        CHECK(error_mentions("engine.threads", "0..=256"));
        free(base);
    }
    /* A subnormal and a tiny temperature in the runtime's settings. */
    cfg = config_with(NULL, "", "1e-45");
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    CHECK(error_mentions("generation.sampling.temperature", "0 (greedy)"));
    free(cfg);
    cfg = config_with(NULL, "", "0.0001");
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    free(cfg);
    cfg = config_with(NULL, "", "1e30");
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(cfg, &rt));
    free(cfg);
    /* A top_k at the vocabulary's scale that fits is accepted, and its session opens. */
    cfg = config_with(NULL, "\"adapter\": {\"top_k\": 4096}", "0.8");
    rt = NULL;
    REQUIRE_OK(attune_runtime_new(cfg, &rt));
    {
        attune_session *s = NULL;
        EXPECT_OK(attune_session_new(rt, "big-top-k", &s));
        EXPECT_OK(attune_session_free(s));
    }
    attune_runtime_free(rt);
    free(cfg);
}

static void generation_temperatures(attune_session *s) {
    attune_reply *reply = NULL;
    const char *bad[] = {"{\"sampling\": {\"temperature\": 1e-45}}", "{\"sampling\": {\"temperature\": 1e-38}}",
                         "{\"sampling\": {\"temperature\": 0.0009}}", "{\"sampling\": {\"temperature\": 1e6}}"};
    const char *good[] = {"{\"sampling\": {\"temperature\": 0}}", "{\"sampling\": {\"temperature\": 0.001}}",
                          "{\"sampling\": {\"temperature\": 1000}}"};
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_generate(s, ATTUNE_PROMPT_TEXT, "Hello", bad[i], NULL, NULL, &reply));
        CHECK(error_mentions("temperature", "0 (greedy)"));
        CHECK(reply == NULL);
    }
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        reply = NULL;
        EXPECT_OK(attune_session_generate_unrecorded(s, ATTUNE_PROMPT_TEXT, "Hello", good[i], NULL, NULL, &reply));
        CHECK(reply != NULL);
        attune_reply_free(reply);
    }
}

/* ---- Rewards: weights and scores ---- */

static double huge_reward(void *user_data, const char *text, size_t len) {
    (void)user_data;
    (void)text;
    (void)len;
    return 1e30;
}

static void reward_ranges(attune_session *s) {
    uint64_t ep = generate_episode(s, "Rate me.", 3);
    uint32_t out = 777;
    const char *bad[] = {
        "{\"thumbs\": true, \"weight\": 3e38}",
        "{\"outcome\": 1, \"weight\": -1e30}",
        "{\"thumbs\": true, \"weight\": 100.5}",
        "{\"stars\": 5, \"weight\": -101}",
        "{\"score\": {\"source\": \"csat\", \"value\": 1e30}}",
        "{\"score\": {\"source\": \"csat\", \"value\": -2e6}}",
        "[{\"outcome\": 1, \"weight\": 0.5}, {\"thumbs\": false, \"weight\": 1e20}]",
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, ep, bad[i], &out));
        CHECK(error_mentions("outside", NULL));
    }
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_score(s, ep, "csat", 1e7, &out));
    /* The host's callback returning an absurd score is refused the same way. */
    EXPECT_OK(attune_session_set_reward_callback(s, huge_reward, NULL));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_REWARD, attune_session_feedback_json(s, ep, "{\"callback\": true}", &out));
    EXPECT_OK(attune_session_set_reward_callback(s, NULL, NULL));
    CHECK(out == 777);
    /* Nothing was recorded: the limits themselves are taken, and queued as the first rewards. */
    EXPECT_OK(attune_session_feedback_json(s, ep, "{\"thumbs\": true, \"weight\": 100}", &out));
    CHECK(out == ATTUNE_FEEDBACK_QUEUED);
    EXPECT_OK(attune_session_feedback_json(s, ep, "{\"score\": {\"source\": \"csat\", \"value\": -1e6}, \"weight\": -100}", &out));
    CHECK(out == ATTUNE_FEEDBACK_QUEUED);
}

/* ---- Handles ---- */

static void handles(attune_runtime *rt, const char *config) {
    attune_session *seen[CYCLES + 1];
    attune_session *victim = NULL, *stale, *forged = (attune_session *)(uintptr_t)0x5a5a;
    attune_runtime *rt2 = NULL, *rt3 = NULL;
    attune_reply *reply = NULL;
    attune_bytes *bytes = NULL;
    attune_update_report *report = NULL;
    const char *user = NULL;
    char name[32];
    size_t i, j, n = 0, repeats = 0;
    uint32_t out = 777;
    bool stopped = false;
    uint64_t ep;

    for (i = 0; i < CYCLES; i++) {
        attune_session *s = NULL;
        snprintf(name, sizeof name, "user-%zu", i);
        REQUIRE_OK(attune_session_new(rt, name, &s));
        seen[n++] = s;
        EXPECT_OK(attune_session_free(s));
    }
    /* Another user's session, opened after all those frees. */
    REQUIRE_OK(attune_session_new(rt, "victim", &victim));
    seen[n++] = victim;
    for (i = 0; i < n; i++) {
        for (j = i + 1; j < n; j++) repeats += seen[i] == seen[j];
    }
    printf("%zu session handles, %zu repeated\n", n, repeats);
    CHECK(repeats == 0);
    ep = generate_episode(victim, "Hello victim.", 5);

    /* Every freed handle is refused by every call, and acts on no one. */
    for (i = 0; i < CYCLES; i += 9) {
        stale = seen[i];
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_feedback_thumbs(stale, ep, false, &out));
        CHECK(error_mentions("not a live session", NULL));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_forget(stale));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_export(stale, &bytes));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT,
                      attune_session_generate(stale, ATTUNE_PROMPT_TEXT, "hi", NULL, NULL, NULL, &reply));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_user_id(stale, &user));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_cancel(stale, &stopped));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_update(stale, &report));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_free(stale));
    }
    /* A made-up handle is refused the same way, and never dereferenced. */
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_feedback_thumbs(forged, ep, false, &out));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_free(forged));
    CHECK(out == 777 && bytes == NULL && reply == NULL && user == NULL && report == NULL);
    /* The victim's episode took no feedback from the stale handles: its first reward is queued
     * now, and its session is still its own. */
    EXPECT_OK(attune_session_user_id(victim, &user));
    CHECK(user != NULL && strcmp(user, "victim") == 0);
    EXPECT_OK(attune_session_feedback_thumbs(victim, ep, true, &out));
    CHECK(out == ATTUNE_FEEDBACK_QUEUED);
    EXPECT_OK(attune_session_update(victim, &report));
    attune_update_report_free(report);
    EXPECT_OK(attune_session_free(victim));
    EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_free(victim));

    /* Runtime handles: a freed runtime's handle is refused, even with a newer runtime alive, and
     * freeing it again does nothing. */
    REQUIRE_OK(attune_runtime_new(config, &rt2));
    attune_runtime_free(rt2);
    REQUIRE_OK(attune_runtime_new(config, &rt3));
    CHECK(rt3 != rt2);
    {
        size_t ctx = 0;
        attune_session *s = NULL;
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_runtime_context_tokens(rt2, &ctx));
        CHECK(error_mentions("not a live runtime", NULL));
        EXPECT_STATUS(ATTUNE_STATUS_INVALID_ARGUMENT, attune_session_new(rt2, "late", &s));
        CHECK(s == NULL && ctx == 0);
        attune_runtime_free(rt2);
        EXPECT_OK(attune_runtime_context_tokens(rt3, &ctx));
        CHECK(ctx == 128);
    }
    attune_runtime_free(rt3);
}

/* ---- Import bytes with hostile dimensions ---- */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static size_t read_varint(const uint8_t *p, size_t at, uint64_t *v) {
    int shift = 0;
    *v = 0;
    for (;;) {
        *v |= (uint64_t)(p[at] & 0x7f) << shift;
        if (!(p[at++] & 0x80)) return at;
        shift += 7;
    }
}

static size_t write_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* The adapter file layout (docs/ and src/store/format.rs): magic (8), version (2), fingerprint
 * (32), metadata length (u32 LE), metadata (postcard: rank varint, alpha f32, hidden varint,
 * vocab varint, top_k varint, ...), tensor values, CRC-32 of everything before it (u32 LE). */
#define META_AT 46

typedef struct {
    uint64_t hidden, vocab, top_k;
} dims_t;

static dims_t read_dims(const uint8_t *file) {
    dims_t d;
    uint64_t rank;
    size_t at = read_varint(file, META_AT, &rank) + 4;
    at = read_varint(file, at, &d.hidden);
    at = read_varint(file, at, &d.vocab);
    read_varint(file, at, &d.top_k);
    return d;
}

/* `file` re-encoded with the dimensions `d`, the metadata length and the checksum fixed. */
static uint8_t *with_dims(const uint8_t *file, size_t len, dims_t d, size_t *out_len) {
    uint8_t *out = (uint8_t *)malloc(len + 32);
    uint64_t rank, x;
    size_t at = read_varint(file, META_AT, &rank) + 4, start = at, n = 0, rest;
    uint32_t meta_len = (uint32_t)file[42] | (uint32_t)file[43] << 8 | (uint32_t)file[44] << 16 | (uint32_t)file[45] << 24;
    uint32_t crc;
    at = read_varint(file, at, &x);
    at = read_varint(file, at, &x);
    at = read_varint(file, at, &x);
    memcpy(out, file, start);
    n = start;
    n += write_varint(out + n, d.hidden);
    n += write_varint(out + n, d.vocab);
    n += write_varint(out + n, d.top_k);
    rest = len - 4 - at;
    memcpy(out + n, file + at, rest);
    meta_len = (uint32_t)(meta_len + (n - start) - (at - start));
    out[42] = (uint8_t)meta_len;
    out[43] = (uint8_t)(meta_len >> 8);
    out[44] = (uint8_t)(meta_len >> 16);
    out[45] = (uint8_t)(meta_len >> 24);
    n += rest;
    crc = crc32_of(out, n);
    out[n++] = (uint8_t)crc;
    out[n++] = (uint8_t)(crc >> 8);
    out[n++] = (uint8_t)(crc >> 16);
    out[n++] = (uint8_t)(crc >> 24);
    *out_len = n;
    return out;
}

static void hostile_imports(attune_runtime *rt) {
    attune_session *s = NULL;
    attune_bytes *exported = NULL;
    const uint8_t *data = NULL;
    size_t len = 0, n = 0, i;
    uint8_t *crafted;
    dims_t model, d;
    uint64_t ep;
    uint32_t out = 0;
    attune_update_report *report = NULL;

    REQUIRE_OK(attune_session_new(rt, "importer", &s));
    ep = generate_episode(s, "Teach me.", 9);
    EXPECT_OK(attune_session_feedback_thumbs(s, ep, true, &out));
    EXPECT_OK(attune_session_update(s, &report));
    attune_update_report_free(report);
    REQUIRE_OK(attune_session_export(s, &exported));
    REQUIRE_OK(attune_bytes_data(exported, &data, &len));
    model = read_dims(data);
    printf("exported adapter: %zu bytes, hidden %llu, vocabulary %llu, top_k %llu\n", len,
           (unsigned long long)model.hidden, (unsigned long long)model.vocab, (unsigned long long)model.top_k);
    CHECK(model.hidden > 0 && model.vocab > model.hidden && model.top_k == 256);

    /* The crafting itself is sound: the model's own dimensions re-encoded import. */
    crafted = with_dims(data, len, model, &n);
    CHECK(n == len && memcmp(crafted, data, len) == 0);
    EXPECT_OK(attune_session_import(s, crafted, n));
    free(crafted);

    {
        dims_t cases[4];
        for (i = 0; i < 4; i++) cases[i] = model;
        cases[0].vocab = 0xFFFFFFFFu;     /* 2^32 - 1 rows over kilobytes of data */
        cases[1].hidden = 1u << 30;       /* another hidden size, far larger */
        cases[2].top_k = 4000000000u;     /* a top_k no vocabulary has */
        cases[3].vocab = model.vocab + 1; /* off by one */
        for (i = 0; i < 4; i++) {
            d = cases[i];
            crafted = with_dims(data, len, d, &n);
            EXPECT_STATUS(ATTUNE_STATUS_CORRUPT_ADAPTER, attune_session_import(s, crafted, n));
            printf("  hidden %llu, vocabulary %llu, top_k %llu: %s\n", (unsigned long long)d.hidden,
                   (unsigned long long)d.vocab, (unsigned long long)d.top_k, last_error());
            free(crafted);
        }
    }
    attune_bytes_free(exported);
    /* The session still works, on the adapter it imported last. */
    ep = generate_episode(s, "Still here?", 11);
    CHECK(ep != UINT64_MAX);
    EXPECT_OK(attune_session_free(s));
}

int main(void) {
    char *store = temp_store();
    char *config = config_with(store, "", "0.8");
    attune_runtime *rt = NULL;
    attune_session *s = NULL;

    configuration_ranges();
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, "host", &s));
    generation_temperatures(s);
    reward_ranges(s);
    EXPECT_OK(attune_session_free(s));
    handles(rt, config);
    hostile_imports(rt);
    attune_runtime_free(rt);
    free(config);
    remove_tree(store);
    free(store);
    return report_results("test_hostile");
}
