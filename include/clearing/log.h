/* Structured logs: one JSON object per line on stderr, with a level and one event name.
 *   {"ts":"2026-11-28T12:00:00.123456Z","level":"warn","event":"runtime.insecure","runtime":"runc"}
 * Quiet by default (warnings and errors only). */
#ifndef CLEARING_LOG_H
#define CLEARING_LOG_H

#include "common.h"

typedef enum { CLR_LOG_DEBUG = 0, CLR_LOG_INFO, CLR_LOG_WARN, CLR_LOG_ERROR } clr_log_level;

CLR_PUBLIC void clr_log_set_level(clr_log_level level);
CLR_PUBLIC clr_log_level clr_log_get_level(void);
/* "debug", "info", "warn", "error" -> level; -1 if unknown. */
CLR_PUBLIC int clr_log_level_parse(const char *name);

/* Logs an event with key/value string pairs, ended by NULL:
 *   clr_log(CLR_LOG_INFO, "sandbox.created", "id", id, "runtime", "runsc", NULL); */
CLR_PUBLIC void clr_log(clr_log_level level, const char *event, ...) __attribute__((sentinel));

#endif
