/* A command's start: its environment, its resource limits, and the vfork child that becomes it
 * (session, descriptors, limits, credentials, working directory, then execve). What a supervisor
 * does with the running command is supervise.c's. */
#ifndef CLR_AGENT_COMMAND_H
#define CLR_AGENT_COMMAND_H

#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "request.h"

/* The command's environment: base (the container's: the image's PATH, HOME, LANG...) with the
 * request's entries added or replacing; of duplicate request entries the last wins. The
 * vector's strings belong to base and req, so only the vector is freed, and only when it is not
 * req itself: req is returned when there is no base or no memory. */
char **agent_command_env(char **base, char **req);

/* A resource limit to set in the command, soft and hard alike. */
struct agent_rlimit {
    int resource; /* RLIMIT_* */
    rlim_t value;
};

#define AGENT_MAX_RLIMITS 3

/* The limits the request asks for, in the order they are set (processes, open files, file
 * size); a limit of 0 is left as inherited. Returns how many were written to out. */
size_t agent_command_rlimits(const struct agent_request *req,
                             struct agent_rlimit out[AGENT_MAX_RLIMITS]);

/* The pipes of one command's start, read and write ends: stdin, stdout, stderr and the report
 * pipe (close-on-exec; the child writes a struct agent_start_failure there when it cannot
 * start). */
/* What the child reports, in one write, when it cannot start: which step failed and errno. */
enum agent_start_step { AGENT_START_SETUP = 1, AGENT_START_CWD, AGENT_START_EXEC };
struct agent_start_failure {
    int step; /* enum agent_start_step */
    int error;
};

enum { CMD_IN_R, CMD_IN_W, CMD_OUT_R, CMD_OUT_W, CMD_ERR_R, CMD_ERR_W, CMD_REP_R, CMD_REP_W,
       CMD_NFDS };

/* Starts the command with vfork: returns once the child has exec'd or exited (its errno then on
 * the report pipe), or -1 with errno when vfork failed. env is the command's environment
 * (agent_command_env()); nothing is allocated in the child. The caller owns fds throughout. */
pid_t agent_command_spawn(const struct agent_request *req, char **env, const int fds[CMD_NFDS]);

#endif
