/* Privacy and the rules around a user's sessions, through the C API on the tiny model: no file or
 * folder name in the store reveals the user id (the id, its hex, its base64, its digits); one open
 * session per user and runtime (ATTUNE_STATUS_BUSY until the first is freed); forget-me is final
 * (after attune_runtime_forget_user or attune_session_forget the open session's saves return
 * ATTUNE_STATUS_USER_FORGOTTEN and nothing comes back on disk, while a session opened afterwards
 * works); an encrypted store opened with the wrong key is ATTUNE_STATUS_ENCRYPTION_KEY, and so is
 * importing its exports into a store without that key. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <sys/stat.h>

#include "common.h"

#define PHONE "+1 555 0100"
#define KEY_HEX "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
/* 32 bytes of 0x5a in base64. */
#define WRONG_KEY_B64 "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo="

/* One turn: a reply and a thumbs up for it; returns the reply's status. */
static attune_status turn(attune_session *s, int seed) {
    char options[128];
    attune_reply *reply = NULL;
    uint64_t id = 0;
    uint32_t outcome = 0;
    attune_status st;
    snprintf(options, sizeof options, "{\"max_new_tokens\": 6, \"sampling\": {\"seed\": %d}}", seed);
    st = attune_session_generate(s, ATTUNE_PROMPT_USER, "Where is my parcel?", options, quiet, NULL, &reply);
    if (st != ATTUNE_STATUS_OK) return st;
    attune_reply_episode_id(reply, &id);
    attune_reply_free(reply);
    return attune_session_feedback_thumbs(s, id, true, &outcome);
}

/* A configuration for the tiny model with `store_json` as the store section. */
static char *config_for(const char *store_json) {
    char *cfg = (char *)malloc(4096);
    snprintf(cfg, 4096,
             "{\"engine\": {\"model_dir\": \"%s\", \"execution_providers\": [\"cpu\"], \"threads\": 2, \"max_context\": 256},"
             " \"store\": %s, \"learner\": {\"max_updates_per_minute\": 0},"
             " \"probe_prompts\": [\"Hello there.\"], \"probe_tokens\": 4}",
             model_dir(), store_json);
    return cfg;
}

static char *store_config(const char *dir, const char *key) {
    char *json = (char *)malloc(1024);
    if (key) {
        snprintf(json, 1024, "{\"dir\": \"%s\", \"encryption_key\": \"%s\"}", dir, key);
    } else {
        snprintf(json, 1024, "{\"dir\": \"%s\"}", dir);
    }
    return json;
}

/* Whether `s` contains `needle`, ignoring ASCII case. */
static int contains_nocase(const char *s, const char *needle) {
    size_t n = strlen(needle), i, j;
    for (i = 0; s[i]; i++) {
        for (j = 0; j < n && s[i + j]; j++) {
            char a = s[i + j], b = needle[j];
            if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z') b = (char)(b - 'A' + 'a');
            if (a != b) break;
        }
        if (j == n) return 1;
    }
    return 0;
}

/* Checks every name under `dir` (two levels: user folders and their files) against the id's
 * spellings; returns how many folders there are. */
static int check_names(const char *dir, int depth) {
    static const char *forbidden[] = {
        PHONE, "15550100", "2b31203535352030313030", "KzEgNTU1IDAxMDA", "KzEgNTU1IDAxMDA=",
    };
    DIR *d = opendir(dir);
    struct dirent *e;
    int folders = 0;
    size_t i;
    if (!d) {
        record(0, __FILE__, __LINE__, "opendir(store)");
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        char path[1024];
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        for (i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++) {
            if (contains_nocase(e->d_name, forbidden[i])) {
                fprintf(stderr, "  %s/%s contains %s\n", dir, e->d_name, forbidden[i]);
                record(0, __FILE__, __LINE__, "a store name reveals the user id");
            }
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            folders++;
            if (depth == 0) check_names(path, 1);
        }
    }
    closedir(d);
    return folders;
}

int main(void) {
    char *store = temp_store();
    char *store_json = store_config(store, NULL);
    char *config = config_for(store_json);
    attune_runtime *rt = NULL;
    attune_session *s = NULL, *second = NULL, *other = NULL;
    uint64_t version = 0;
    bool existed = false;

    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, PHONE, &s));
    EXPECT_OK(turn(s, 1));
    EXPECT_OK(attune_session_save(s, &version));
    CHECK(version == 1);

    /* One open session per user and runtime. */
    EXPECT_STATUS(ATTUNE_STATUS_BUSY, attune_session_new(rt, PHONE, &second));
    CHECK(second == NULL);
    CHECK(strstr(last_error(), "already has an open session on this runtime") != NULL);
    REQUIRE_OK(attune_session_new(rt, "someone else", &other));
    EXPECT_OK(turn(other, 9));
    EXPECT_OK(attune_session_free(other));

    /* The store's names: one folder per user, none of them spelling the id. */
    CHECK(check_names(store, 0) == 2); /* PHONE and "someone else" (its pending file) */

    /* Forget-me from the runtime while the session is open: its writes are refused from now on,
     * it still works in memory, and nothing comes back on disk. */
    EXPECT_OK(attune_runtime_forget_user(rt, PHONE, &existed));
    CHECK(existed);
    EXPECT_STATUS(ATTUNE_STATUS_USER_FORGOTTEN, attune_session_save(s, &version));
    CHECK(strstr(last_error(), "forgotten") != NULL);
    CHECK(version == 1); /* out-parameters are written only on success */
    EXPECT_STATUS(ATTUNE_STATUS_USER_FORGOTTEN, attune_session_reset(s));
    EXPECT_OK(turn(s, 2)); /* the thumbs runs an update (auto_update_after 1) */
    CHECK(check_names(store, 0) == 1); /* only "someone else" */
    EXPECT_OK(attune_session_free(s));

    /* A session opened afterwards works normally; its own forget is final for it too. */
    REQUIRE_OK(attune_session_new(rt, PHONE, &s));
    EXPECT_OK(turn(s, 3));
    EXPECT_OK(attune_session_save(s, &version));
    CHECK(version == 1);
    EXPECT_OK(attune_session_forget(s));
    EXPECT_STATUS(ATTUNE_STATUS_USER_FORGOTTEN, attune_session_save(s, &version));
    EXPECT_OK(turn(s, 4));
    CHECK(check_names(store, 0) == 1);
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    rt = NULL;
    remove_tree(store);
    free(store);
    free(store_json);
    free(config);

    /* Encryption at rest: a store sealed under one key, opened with another. */
    CHECK(strcmp(attune_status_name(ATTUNE_STATUS_ENCRYPTION_KEY), "ATTUNE_STATUS_ENCRYPTION_KEY") == 0);
    CHECK(strcmp(attune_status_name(ATTUNE_STATUS_USER_FORGOTTEN), "ATTUNE_STATUS_USER_FORGOTTEN") == 0);
    store = temp_store();
    store_json = store_config(store, KEY_HEX);
    config = config_for(store_json);
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, PHONE, &s));
    EXPECT_OK(turn(s, 5));
    EXPECT_OK(attune_session_save(s, &version));
    {
        attune_bytes *bytes = NULL;
        const uint8_t *data = NULL;
        size_t len = 0;
        char *plain_dir = temp_store();
        char *plain_json = store_config(plain_dir, NULL);
        char *plain_config = config_for(plain_json);
        attune_runtime *plain = NULL;
        attune_session *p = NULL;
        EXPECT_OK(attune_session_export(s, &bytes));
        EXPECT_OK(attune_bytes_data(bytes, &data, &len));
        CHECK(len > 8 && memcmp(data, "\x89" "ATSEAL\n", 8) == 0);
        REQUIRE_OK(attune_runtime_new(plain_config, &plain));
        REQUIRE_OK(attune_session_new(plain, PHONE, &p));
        EXPECT_STATUS(ATTUNE_STATUS_ENCRYPTION_KEY, attune_session_import(p, data, len));
        EXPECT_OK(attune_session_free(p));
        attune_runtime_free(plain);
        attune_bytes_free(bytes);
        remove_tree(plain_dir);
        free(plain_dir);
        free(plain_json);
        free(plain_config);
    }
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);
    rt = NULL;
    free(store_json);
    free(config);

    store_json = store_config(store, WRONG_KEY_B64);
    config = config_for(store_json);
    EXPECT_STATUS(ATTUNE_STATUS_ENCRYPTION_KEY, attune_runtime_new(config, &rt));
    CHECK(rt == NULL);
    CHECK(strstr(last_error(), "wrong encryption key") != NULL);
    free(store_json);
    free(config);

    store_json = store_config(store, "0123");
    config = config_for(store_json);
    EXPECT_STATUS(ATTUNE_STATUS_CONFIG, attune_runtime_new(config, &rt));
    CHECK(strstr(last_error(), "store.encryption_key") != NULL);
    free(store_json);
    free(config);

    store_json = store_config(store, KEY_HEX);
    config = config_for(store_json);
    REQUIRE_OK(attune_runtime_new(config, &rt));
    REQUIRE_OK(attune_session_new(rt, PHONE, &s));
    EXPECT_OK(attune_session_save(s, &version));
    CHECK(version == 2); /* the right key finds version 1 (the save; an export saves no version) */
    EXPECT_OK(attune_session_free(s));
    attune_runtime_free(rt);

    remove_tree(store);
    free(store);
    free(store_json);
    free(config);
    return report_results("test_privacy");
}
