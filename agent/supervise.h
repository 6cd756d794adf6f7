/* The supervising half of the agent: one command at a time, from its request to its result, its
 * every process gone before the result is written. */
#ifndef CLR_AGENT_SUPERVISE_H
#define CLR_AGENT_SUPERVISE_H

/* Runs one command from the request frames on in_fd, writing frames to out_fd; returns when
 * the command and every process it started are gone and the result frame is written. 0, or -1
 * when no command could be read or the supervisor could not be set up. */
int agent_supervise(int in_fd, int out_fd);

/* Runs commands one after another from the frames on fd, each as agent_supervise() runs one,
 * until the stream ends: the live channel's supervisors are kept and reused, so a command's
 * start does not wait for a fork. Every process of one command is gone before the next EXEC is
 * read. */
int agent_supervise_many(int fd);

#endif
