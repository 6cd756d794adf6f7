/* The agent's request decoder: inside the sandbox, the one parser that turns host bytes into an
 * execve(). Whatever the payload, an accepted request has a command, NULL-terminated vectors
 * within bounds and never runs as root; a refused one leaves nothing allocated. */
#include <stdlib.h>

#include "request.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent_request req;
    char err[256];
    if (agent_request_parse(&req, data, size, err, sizeof(err)) < 0) {
        if (req.argv || req.envp || req.cwd || req.argc || req.envc)
            abort();
        return 0;
    }
    if (req.argc == 0 || req.argc > CLR_PROTO_MAX_ARGS || req.envc > CLR_PROTO_MAX_ENV ||
        req.uid == 0 || req.gid == 0 || !req.argv || req.argv[req.argc] || !req.envp ||
        req.envp[req.envc])
        abort();
    agent_request_clear(&req);
    return 0;
}
