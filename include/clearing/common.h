/* clearing: shared definitions. One error convention everywhere: a function returns 0 (or a
 * non-negative value) on success and a negative value on failure, having filled a clr_error
 * with a semantic code, the errno involved (0 if none) and a message that says what failed,
 * on what, and what to do about it. */
#ifndef CLEARING_COMMON_H
#define CLEARING_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(CLR_BUILDING_LIBRARY)
#define CLR_PUBLIC __attribute__((visibility("default")))
#else
#define CLR_PUBLIC
#endif

#define CLR_LIKELY(x) __builtin_expect(!!(x), 1)
#define CLR_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* What kind of failure: the HTTP layer maps each to one status, the CLI to one exit code. */
typedef enum {
    CLR_E_NONE = 0,
    CLR_E_INVALID,     /* the caller's input is wrong (400) */
    CLR_E_NOT_FOUND,   /* no such sandbox, image, exec (404) */
    CLR_E_CONFLICT,    /* exists already, or in the wrong state (409) */
    CLR_E_LIMIT,       /* a configured capacity or size limit is reached (429/413) */
    CLR_E_UNAVAILABLE, /* the engine or a needed runtime is down or missing (503) */
    CLR_E_DENIED,      /* refused by policy or authentication (401/403) */
    CLR_E_TIMEOUT,     /* an operation did not finish in time (504) */
    CLR_E_ENGINE,      /* the engine answered with an error (502) */
    CLR_E_NO_SPACE,    /* no space left on the workspace (507) */
    CLR_E_INTERNAL,    /* a bug or an unexpected system failure (500) */
    CLR_E_UNSUPPORTED, /* this host cannot do it: a feature is off (501), the message says which */
} clr_error_code;

typedef struct clr_error {
    clr_error_code code;
    int errnum;
    char message[1024];
} clr_error;

#define CLR_ERROR_INIT {CLR_E_NONE, 0, {0}}

/* Fills err (if not NULL) and returns -1, so callers can `return clr_error_set(...)`. */
CLR_PUBLIC int clr_error_set(clr_error *err, clr_error_code code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes err's message with more context ("creating sandbox: ..."); returns -1. */
CLR_PUBLIC int clr_error_prefix(clr_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A stable lower-case name for a code ("invalid", "not_found", ...). */
CLR_PUBLIC const char *clr_error_code_name(clr_error_code code);

CLR_PUBLIC const char *clr_version(void);

#endif
