/* The commands' seccomp filter: what it refuses and why is told in filter.c. Installed once per
 * supervisor, inherited by every command it starts. */
#ifndef CLR_AGENT_FILTER_H
#define CLR_AGENT_FILTER_H

#include <linux/filter.h>

/* The filter program: prog points at static storage (not to be freed or changed). */
void agent_filter_program(struct sock_fprog *prog);

/* Sets no_new_privs and installs the filter on the calling thread; 0, or -1 with errno. */
int agent_filter_install(void);

#endif
