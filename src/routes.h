/* The routes of the HTTP API: one table of {method, path pattern, handler, body}, one matcher
 * over it, one small handler per row that calls one service function. The connection layer
 * (server.c) asks routable() when a request's headers are in and route() once its body is. */
#ifndef CLR_ROUTES_H
#define CLR_ROUTES_H

#include <stdbool.h>
#include <stdio.h>

#include "server_internal.h"

/* Whether route() would run a handler for method on url, and whether that handler reads a
 * body (*takes_body). A request it would refuse (unknown path, bad id, method the route does
 * not take) is answered from its headers, and its body is never read, let alone stored. */
bool routable(const char *url, const char *method, bool *takes_body);

/* Answers the request: its handler, or the 400/404/405 of a path or method the table does not
 * have (the same answer whether the body was read or not). */
enum MHD_Result route(struct server *s, struct MHD_Connection *c, const char *url,
                      const char *method, struct request *rq);

/* Prints the table, one route a line: "METHOD PATTERN BODY" (BODY: json, upload or none), in
 * the table's order; what `clearing serve --print-routes` shows and the route test reads. */
void routes_print(FILE *f);

#endif
