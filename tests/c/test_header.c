/* The header on its own: included twice (include guard), compiled as C99 and C++11 with warnings
 * as errors (see the Makefile), its version macros equal to Cargo.toml's version (passed in as
 * ATTUNE_CARGO_VERSION by the Makefile) and to the library's run-time version, and every status
 * code named. Needs no model. */
#include "attune.h"
#include "attune.h" /* the double-include check */

#include <stdio.h>
#include <string.h>

#ifndef ATTUNE_CARGO_VERSION
#error "compile with -DATTUNE_CARGO_VERSION=\"x.y.z\" (the Makefile reads it from Cargo.toml)"
#endif

static int failed = 0;
static int passed = 0;

static void check(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "FAIL: %s\n", what);
    }
}

int main(void) {
    char version[32];
    const attune_status codes[] = {
        ATTUNE_STATUS_OK, ATTUNE_STATUS_NULL_ARGUMENT, ATTUNE_STATUS_INVALID_UTF8,
        ATTUNE_STATUS_INVALID_ENUM, ATTUNE_STATUS_BUFFER_TOO_SMALL, ATTUNE_STATUS_INVALID_JSON,
        ATTUNE_STATUS_BUSY, ATTUNE_STATUS_RUNTIME_CLOSED, ATTUNE_STATUS_NOT_FOUND,
        ATTUNE_STATUS_UNSUPPORTED, ATTUNE_STATUS_PANIC, ATTUNE_STATUS_ORT_LIBRARY,
        ATTUNE_STATUS_ORT, ATTUNE_STATUS_MODEL, ATTUNE_STATUS_TOKENIZER, ATTUNE_STATUS_TEMPLATE,
        ATTUNE_STATUS_CONFIG, ATTUNE_STATUS_INVALID_ARGUMENT, ATTUNE_STATUS_CONTEXT_OVERFLOW,
        ATTUNE_STATUS_EXECUTION_PROVIDER, ATTUNE_STATUS_UNKNOWN_EPISODE,
        ATTUNE_STATUS_INVALID_REWARD, ATTUNE_STATUS_LEARNING, ATTUNE_STATUS_STORE,
        ATTUNE_STATUS_CORRUPT_ADAPTER, ATTUNE_STATUS_IO, ATTUNE_STATUS_GPU};
    size_t i;
    char needed_msg[8];
    size_t needed = 0;

    /* Macros against Cargo.toml. */
    snprintf(version, sizeof version, "%d.%d.%d", ATTUNE_VERSION_MAJOR, ATTUNE_VERSION_MINOR,
             ATTUNE_VERSION_PATCH);
    check(strcmp(version, ATTUNE_CARGO_VERSION) == 0, "MAJOR.MINOR.PATCH == Cargo.toml version");
    check(strcmp(ATTUNE_VERSION_STRING, ATTUNE_CARGO_VERSION) == 0,
          "ATTUNE_VERSION_STRING == Cargo.toml version");
    check(ATTUNE_VERSION_NUMBER ==
              ATTUNE_VERSION_MAJOR * 10000 + ATTUNE_VERSION_MINOR * 100 + ATTUNE_VERSION_PATCH,
          "ATTUNE_VERSION_NUMBER formula");
    /* Macros against the library this program runs with. */
    check(attune_version_number() == ATTUNE_VERSION_NUMBER, "attune_version_number()");
    check(strcmp(attune_version_string(), ATTUNE_VERSION_STRING) == 0, "attune_version_string()");

    /* Every status has its own name; unknown numbers have a name too. */
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *name = attune_status_name(codes[i]);
        size_t j;
        check(name != NULL && strncmp(name, "ATTUNE_STATUS_", 14) == 0, "status has a name");
        for (j = 0; j < i; j++) {
            check(codes[j] != codes[i] && strcmp(attune_status_name(codes[j]), name) != 0,
                  "status numbers and names are unique");
        }
    }
    check(strcmp(attune_status_name(ATTUNE_STATUS_BUSY), "ATTUNE_STATUS_BUSY") == 0, "BUSY name");
    check(strcmp(attune_status_name(9999), "ATTUNE_STATUS_UNKNOWN") == 0, "unknown status name");

    /* No failure yet on this thread: the message is "" (1 byte with its NUL). */
    check(attune_last_error_message(needed_msg, sizeof needed_msg, &needed) == ATTUNE_STATUS_OK &&
              needed == 1 && needed_msg[0] == '\0',
          "empty last error before any failure");

    printf("test_header: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
