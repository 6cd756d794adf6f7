/* Plans, as the API's POST /v1/plans and `clearing plan run` read them: YAML or JSON from the
 * caller. Parsing must end with a plan or an error, within bounded work (alias bombs). */
#include <stdlib.h>
#include <string.h>

#include "clearing/log.h"
#include "clearing/plan.h"
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
    clr_plan *plan = NULL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_plan_parse(&plan, (const char *)data, size, "fuzz.yaml", &err);
    if (rc == 0) {
        if (!plan)
            abort();
        clr_plan_free(plan);
    } else if (plan || err.code == CLR_E_NONE || !memchr(err.message, '\0', sizeof(err.message))) {
        abort();
    }
    return 0;
}
