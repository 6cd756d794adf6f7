/* A command's request: the EXEC frame's payload decoded. The one parser inside the sandbox that
 * turns host bytes into an execve(): it never lets a command run as root, never cuts an argument
 * at an embedded NUL and never allocates without bound, whatever the payload says. Calls nothing
 * of the agent's but proto. */
#ifndef CLR_AGENT_REQUEST_H
#define CLR_AGENT_REQUEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

struct agent_request {
    char **argv; /* NULL-terminated */
    size_t argc;
    char **envp; /* NULL-terminated */
    size_t envc;
    char *cwd;
    uint64_t timeout_ms;
    uint64_t stdout_cap;
    uint64_t stderr_cap;
    uid_t uid;
    gid_t gid;
    uint64_t nproc;   /* 0: leave as is */
    uint64_t memory;  /* bytes the command's process tree may hold; 0: unlimited */
    uint64_t memory_source; /* enum clr_memory_source */
    uint64_t nofile;  /* 0: leave as is */
    uint64_t fsize;   /* 0: leave as is */
    uint64_t stream;  /* 1: no output caps (CLR_REQ_STREAM) */
};

/* Decodes an EXEC payload into req, which then owns its vectors and strings (released by
 * agent_request_clear()). Returns 0, or -1 with a message in err and req left empty (nothing to
 * free). Out of memory ends the process (agent_die_oom). */
int agent_request_parse(struct agent_request *req, const uint8_t *payload, size_t len,
                        char *err, size_t errlen);

/* Frees what req owns and zeroes it. */
void agent_request_clear(struct agent_request *req);

#endif
