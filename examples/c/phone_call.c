/* phone_call: a simulated phone-call host for libattune.
 *
 * A voice assistant answers calls for one caller. Each call is a loop of caller turns: the
 * caller's words (here from a script; in a real host, speech-to-text) go into the chat, the reply
 * is streamed piece by piece to the "speaker" (here stdout; in a real host, text-to-speech), and
 * when the caller starts talking over the reply (barge-in) the text callback returns false and
 * generation stops at once. Call outcomes become rewards: an interruption is a mild negative, and
 * at hang-up the call's outcome (resolved, escalated, abandoned) and a satisfaction survey score
 * are given to every reply of the call. The runtime updates the caller's adapter after every few
 * rewards, and the adapter is saved at hang-up, so the next call starts from what this one taught.
 *
 * Build: make ffi          Run: target/c/phone_call [model_dir] [store_dir]
 * Defaults: models/tiny and /tmp/attune-phone-call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attune.h"

/* One caller turn: what they say, and after how many streamed pieces they talk over the reply
 * (0: they let the assistant finish). */
typedef struct {
    const char *words;
    int barge_in_after;
} turn_t;

/* One scripted call: its turns and how it ended. */
typedef struct {
    const turn_t *turns;
    int n_turns;
    double outcome;     /* 1 resolved, 0 escalated to a person, -1 caller hung up angry */
    double survey_csat; /* post-call survey, 1..10 (any scale works: it is z-scored per source) */
} call_t;

static const turn_t CALL1[] = {{"Hi, I'd like to check on my order.", 0},
                               {"It's order 4471, placed on Monday.", 6},
                               {"Can you send it to my office instead?", 0}};
static const turn_t CALL2[] = {{"Hello again. My parcel still hasn't arrived.", 4},
                               {"I need it by Friday, can you help?", 0}};
static const turn_t CALL3[] = {{"Quick question: are you open on Sunday?", 0}};
static const call_t CALLS[] = {{CALL1, 3, 1.0, 8.0}, {CALL2, 2, -1.0, 2.0}, {CALL3, 1, 1.0, 9.0}};

#define MAX_EPISODES 16
#define MAX_HISTORY 6

/* The speaker: prints each piece as it arrives and plays the caller's barge-in. */
typedef struct {
    int pieces;
    int barge_in_after;
    int barged_in;
} speaker_t;

static bool speak(void *user_data, const char *text, size_t len) {
    speaker_t *sp = (speaker_t *)user_data;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    sp->pieces++;
    if (sp->barge_in_after > 0 && sp->pieces >= sp->barge_in_after) {
        sp->barged_in = 1;
        return false; /* the caller started talking: stop now */
    }
    return true;
}

/* Library log records at WARN and above go to stderr (this may run on any thread). */
static void on_log(void *user_data, uint32_t level, const char *target, const char *message) {
    (void)user_data;
    fprintf(stderr, "[attune %s %s] %s\n", level == ATTUNE_LOG_ERROR ? "error" : "warn", target, message);
}

/* Prints the failed call's status and this thread's message, and exits. */
static void check(attune_status st, const char *what) {
    char msg[1024];
    if (st == ATTUNE_STATUS_OK) return;
    if (attune_last_error_message(msg, sizeof msg, NULL) != ATTUNE_STATUS_OK) msg[0] = '\0';
    fprintf(stderr, "%s failed: %s: %s\n", what, attune_status_name(st), msg);
    exit(1);
}

/* Appends `s` to `out` as the inside of a JSON string. */
static void json_escape(char *out, size_t cap, const char *s) {
    size_t n = strlen(out);
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
}

/* The chat so far: a system message plus the last MAX_HISTORY turns. */
typedef struct {
    char *role[MAX_HISTORY];
    char *content[MAX_HISTORY];
    int n;
} history_t;

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *out = (char *)malloc(n);
    memcpy(out, s, n);
    return out;
}

static void history_add(history_t *h, const char *role, const char *content) {
    if (h->n == MAX_HISTORY) {
        free(h->role[0]);
        free(h->content[0]);
        memmove(h->role, h->role + 1, sizeof(char *) * (MAX_HISTORY - 1));
        memmove(h->content, h->content + 1, sizeof(char *) * (MAX_HISTORY - 1));
        h->n--;
    }
    h->role[h->n] = copy_string(role);
    h->content[h->n] = copy_string(content);
    h->n++;
}

static void history_clear(history_t *h) {
    int i;
    for (i = 0; i < h->n; i++) {
        free(h->role[i]);
        free(h->content[i]);
    }
    h->n = 0;
}

static char *history_json(const history_t *h) {
    size_t cap = 16384;
    char *out = (char *)malloc(cap);
    int i;
    strcpy(out, "[{\"role\": \"system\", \"content\": \"You are the phone assistant of a parcel "
                "shop. Answer in one or two short sentences.\"}");
    for (i = 0; i < h->n; i++) {
        strcat(out, ", {\"role\": \"");
        strcat(out, h->role[i]);
        strcat(out, "\", \"content\": \"");
        json_escape(out, cap - 8, h->content[i]);
        strcat(out, "\"}");
    }
    strcat(out, "]");
    return out;
}

/* Prints an update's outcome and a few numbers from its JSON report. */
static void print_update(attune_session *s) {
    attune_update_report *report = NULL;
    const char *json = NULL;
    uint32_t outcome = 0;
    static const char *names[] = {"accepted", "rolled back", "skipped"};
    if (attune_session_last_report(s, &report) != ATTUNE_STATUS_OK) return;
    attune_update_report_outcome(report, &outcome);
    attune_update_report_json(report, &json);
    printf("   [learning] update %s: %.160s...\n", outcome <= 2 ? names[outcome] : "?", json);
    attune_update_report_free(report);
}

/* Gives a reward (JSON) to an episode and reports an update it triggers. */
static void reward(attune_session *s, uint64_t episode, const char *json) {
    uint32_t outcome = 0;
    attune_status st = attune_session_feedback_json(s, episode, json, &outcome);
    if (st == ATTUNE_STATUS_UNKNOWN_EPISODE) return; /* already learned from (or expired) */
    check(st, "attune_session_feedback_json");
    if (outcome == ATTUNE_FEEDBACK_UPDATED) print_update(s);
}

int main(int argc, char **argv) {
    const char *model = argc > 1 ? argv[1] : "models/tiny";
    const char *store = argc > 2 ? argv[2] : "/tmp/attune-phone-call";
    const char *caller = "+1-555-0100";
    char config[2048];
    attune_runtime *rt = NULL;
    attune_session *s = NULL;
    history_t history = {{0}, {0}, 0};
    size_t c;
    int t;

    printf("libattune %s (header %s)\n", attune_version_string(), ATTUNE_VERSION_STRING);
    if (attune_version_number() != ATTUNE_VERSION_NUMBER) {
        fprintf(stderr, "library and header versions differ\n");
        return 1;
    }
    check(attune_set_log_callback(on_log, NULL, ATTUNE_LOG_WARN), "attune_set_log_callback");
    snprintf(config, sizeof config,
             "{\"engine\": {\"model_dir\": \"%s\", \"threads\": 2, \"max_context\": 1024},"
             " \"store\": {\"dir\": \"%s\"},"
             " \"learner\": {\"auto_update_after\": 3, \"max_same_sign_run\": 0},"
             " \"generation\": {\"max_new_tokens\": 24, \"stop_strings\": [\"\\nUser:\"],"
             " \"sampling\": {\"temperature\": 0.7, \"top_p\": 0.95}}}",
             model, store);
    check(attune_runtime_new(config, &rt), "attune_runtime_new");
    /* The caller's adapter: loaded from the store when they called before. */
    check(attune_session_new(rt, caller, &s), "attune_session_new");

    for (c = 0; c < sizeof CALLS / sizeof CALLS[0]; c++) {
        const call_t *call = &CALLS[c];
        uint64_t episodes[MAX_EPISODES];
        int n_episodes = 0;
        uint64_t version = 0;
        char json[256];

        printf("\n=== call %zu from %s ===\n", c + 1, caller);
        for (t = 0; t < call->n_turns; t++) {
            speaker_t sp = {0, call->turns[t].barge_in_after, 0};
            attune_reply *reply = NULL;
            const char *text = NULL;
            uint64_t episode = 0;
            char *messages;
            char options[64];

            printf("caller: %s\nassistant: ", call->turns[t].words);
            history_add(&history, "user", call->turns[t].words);
            messages = history_json(&history);
            snprintf(options, sizeof options, "{\"sampling\": {\"seed\": %zu}}", c * 10 + (size_t)t);
            check(attune_session_generate(s, ATTUNE_PROMPT_CHAT, messages, options, speak, &sp, &reply),
                  "attune_session_generate");
            free(messages);
            check(attune_reply_text(reply, &text, NULL), "attune_reply_text");
            check(attune_reply_episode_id(reply, &episode), "attune_reply_episode_id");
            history_add(&history, "assistant", text);
            attune_reply_free(reply);
            if (sp.barged_in) {
                /* Talking over the reply: a mild negative for this reply, right away. */
                printf(" [caller barges in]\n");
                reward(s, episode, "{\"outcome\": -0.3}");
            } else {
                printf("\n");
                if (n_episodes < MAX_EPISODES) episodes[n_episodes++] = episode;
            }
        }

        /* Hang-up: the call's outcome and the survey go to every reply not rewarded yet. */
        printf("--- hang-up: outcome %+.0f, survey %.0f/10\n", call->outcome, call->survey_csat);
        snprintf(json, sizeof json,
                 "[{\"outcome\": %.2f, \"weight\": 0.7}, "
                 "{\"score\": {\"source\": \"csat\", \"value\": %.2f}, \"weight\": 0.3}]",
                 call->outcome, call->survey_csat);
        for (t = 0; t < n_episodes; t++) reward(s, episodes[t], json);
        check(attune_session_save(s, &version), "attune_session_save");
        printf("--- adapter of %s saved as version %llu\n", caller, (unsigned long long)version);
        history_clear(&history);
    }

    {
        char stats[4096];
        if (attune_session_stats_json(s, stats, sizeof stats, NULL) == ATTUNE_STATUS_OK) {
            printf("\nsession: %.300s...\n", stats);
        }
    }
    check(attune_session_free(s), "attune_session_free");
    attune_runtime_free(rt);
    attune_set_log_callback(NULL, NULL, ATTUNE_LOG_OFF);
    return 0;
}
