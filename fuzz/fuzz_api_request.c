/* API request bodies: what any client of the daemon may send. An input is a request kind, a
 * newline and a body ("create\n{...}"); the body is read as src/server.c reads it (JSON, no
 * duplicate keys, an object) and checked as the handler checks it, down to limits, durations,
 * sizes, base64 and plans given inline. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clearing/log.h"
#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    clr_log_set_level(CLR_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size < 16 ? size : 16);
    if (!nl)
        return 0;
    char kind[16];
    size_t klen = (size_t)(nl - data);
    memcpy(kind, data, klen);
    kind[klen] = '\0';
    const char *body = (const char *)nl + 1;
    size_t blen = size - klen - 1;

    json_error_t jerr;
    json_t *req = json_loadb(body, blen, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        return 0;
    }
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_check_request(kind, req, &err);
    if (rc < 0 && (err.code == CLR_E_NONE || !memchr(err.message, '\0', sizeof(err.message))))
        abort(); /* every refusal says why */
    json_decref(req);
    return 0;
}
