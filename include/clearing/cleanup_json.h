/* Scope-owned jansson values: `_cleanup_json_ json_t *v = json_object ();` is released (its
 * reference dropped) on every return path; steal_pointer (&v) hands the reference on. */
#ifndef CLEARING_CLEANUP_JSON_H
#define CLEARING_CLEANUP_JSON_H

#include <jansson.h>

#include "clearing/cleanup.h"

/* jansson (2.11 and later) has json_decrefp itself: the function its json_auto_t uses. */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

#endif
