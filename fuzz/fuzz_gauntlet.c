/* Gauntlet files: a repository's own .clearing/gauntlet.yaml is as untrusted as the code it
 * checks. Parsing must end with a gauntlet or an error, within bounded work. */
#include <stdlib.h>
#include <string.h>

#include "clearing/gauntlet.h"
#include "clearing/log.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    clr_log_set_level(CLR_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clr_gauntlet *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_gauntlet_parse(&g, (const char *)data, size, "gauntlet.yaml", &err) == 0) {
        if (!g || clr_gauntlet_count(g) > CLR_GAUNTLET_MAX_CHECKS)
            abort();
        clr_gauntlet_free(g);
    } else if (g || err.code == CLR_E_NONE || !memchr(err.message, '\0', sizeof(err.message))) {
        abort();
    }
    return 0;
}
