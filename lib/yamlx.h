/* Walking a libyaml document with bounded work and errors that give the line. Shared by the
 * gauntlet and plan parsers. */
#ifndef CLR_YAMLX_H
#define CLR_YAMLX_H

#include <yaml.h>

#include "clearing/common.h"

#define CLR_YAML_MAX_NODES 20000

typedef struct clr_yaml {
    yaml_document_t doc;
    const char *source;
    clr_error *err;
    unsigned visited;
    bool loaded;
} clr_yaml;

/* Parses text into y->doc; CLR_E_INVALID with the line on malformed input. */
int clr_yaml_load(clr_yaml *y, const char *text, size_t len, const char *source, clr_error *err);
/* Frees the document (nothing when none was loaded); y may be zero-initialised. */
void clr_yaml_free(clr_yaml *y);
/* A scope-owned document: `_cleanup_yaml_ clr_yaml y = {0};` is freed on every return path. */
#define _cleanup_yaml_ __attribute__((cleanup(clr_yaml_free)))
int clr_yaml_error(clr_yaml *y, yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A node by index; NULL once the walk has visited too many nodes (alias bombs). */
yaml_node_t *clr_yaml_node(clr_yaml *y, int index);
const char *clr_yaml_scalar(yaml_node_t *n);
int clr_yaml_string(clr_yaml *y, yaml_node_t *v, const char *key, char **out);
int clr_yaml_bool(clr_yaml *y, yaml_node_t *v, const char *key, bool *out);
int clr_yaml_number(clr_yaml *y, yaml_node_t *v, const char *key, double lo, double hi,
                    double *out);
int clr_yaml_strv(clr_yaml *y, yaml_node_t *v, const char *key, char ***out);
/* A mapping of strings as "KEY=VALUE" entries, NULL-terminated. */
int clr_yaml_env(clr_yaml *y, yaml_node_t *v, const char *key, char ***out);
void clr_strv_free(char **v);

#endif
