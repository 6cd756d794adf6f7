/* Commands (execs): admitted within max_execs, audited before they run, recorded while they
 * run, their result stored before the answer; and the binding of a command to its sandbox's
 * environment, shared with background processes. */
#ifndef CLR_SERVICE_EXECS_H
#define CLR_SERVICE_EXECS_H

#include "service_int.h"
#include "validate.h"

/* Checks the sandbox is running and puts its environment before the command's own. */
int svc_command_bind(clr_service *svc, struct command *c, const char *id, clr_error *err);

#endif
