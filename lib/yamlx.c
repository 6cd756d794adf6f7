/* libyaml document helpers: see yamlx.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yamlx.h"

void clr_strv_free(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

int clr_yaml_load(clr_yaml *y, const char *text, size_t len, const char *source, clr_error *err)
{
    memset(y, 0, sizeof(*y));
    y->source = source;
    y->err = err;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &y->doc)) {
        clr_error_set(err, CLR_E_INVALID, 0, "%s:%lu: not valid YAML: %s", source,
                      (unsigned long)parser.problem_mark.line + 1,
                      parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    y->loaded = true;
    return 0;
}

void clr_yaml_free(clr_yaml *y)
{
    if (y->loaded)
        yaml_document_delete(&y->doc);
    y->loaded = false;
}

int clr_yaml_error(clr_yaml *y, yaml_node_t *n, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return clr_error_set(y->err, CLR_E_INVALID, 0, "%s:%lu: %s", y->source,
                         n ? (unsigned long)n->start_mark.line + 1 : 0ul, msg);
}

yaml_node_t *clr_yaml_node(clr_yaml *y, int index)
{
    /* Aliases make nodes reachable many times: the walk is bounded however the YAML is built. */
    if (++y->visited > CLR_YAML_MAX_NODES)
        return NULL;
    return yaml_document_get_node(&y->doc, index);
}

const char *clr_yaml_scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int clr_yaml_string(clr_yaml *y, yaml_node_t *v, const char *key, char **out)
{
    const char *s = clr_yaml_scalar(v);
    if (!s)
        return clr_yaml_error(y, v, "%s must be a string", key);
    if (v->data.scalar.length != strlen(s))
        return clr_yaml_error(y, v, "%s contains a NUL byte", key);
    free(*out);
    *out = strdup(s);
    return *out ? 0 : clr_yaml_error(y, v, "out of memory");
}

int clr_yaml_bool(clr_yaml *y, yaml_node_t *v, const char *key, bool *out)
{
    const char *s = clr_yaml_scalar(v);
    if (s && (!strcmp(s, "true") || !strcmp(s, "yes"))) {
        *out = true;
        return 0;
    }
    if (s && (!strcmp(s, "false") || !strcmp(s, "no"))) {
        *out = false;
        return 0;
    }
    return clr_yaml_error(y, v, "%s must be true or false", key);
}

int clr_yaml_number(clr_yaml *y, yaml_node_t *v, const char *key, double lo, double hi,
                    double *out)
{
    const char *s = clr_yaml_scalar(v);
    char *end = NULL;
    double d = s ? strtod(s, &end) : NAN;
    if (!s || !*s || *end || !isfinite(d) || d < lo || d > hi)
        return clr_yaml_error(y, v, "%s must be a number from %g to %g", key, lo, hi);
    *out = d;
    return 0;
}

int clr_yaml_strv(clr_yaml *y, yaml_node_t *v, const char *key, char ***out)
{
    if (!v || v->type != YAML_SEQUENCE_NODE)
        return clr_yaml_error(y, v, "%s must be a list of strings", key);
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n == 0 || n > 4096)
        return clr_yaml_error(y, v, "%s must have 1 to 4096 items", key);
    char **a = calloc(n + 1, sizeof(char *));
    if (!a)
        return clr_yaml_error(y, v, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = clr_yaml_node(y, v->data.sequence.items.start[i]);
        if (clr_yaml_string(y, it, key, &a[i]) < 0) {
            clr_strv_free(a);
            return -1;
        }
    }
    clr_strv_free(*out);
    *out = a;
    return 0;
}

int clr_yaml_env(clr_yaml *y, yaml_node_t *v, const char *key, char ***out)
{
    if (!v || v->type != YAML_MAPPING_NODE)
        return clr_yaml_error(y, v, "%s must be a mapping of strings", key);
    size_t cnt = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    if (cnt > 256)
        return clr_yaml_error(y, v, "%s: at most 256 variables", key);
    char **env = calloc(cnt + 1, sizeof(char *));
    if (!env)
        return clr_yaml_error(y, v, "out of memory");
    size_t i = 0;
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
        const char *ek = clr_yaml_scalar(clr_yaml_node(y, q->key));
        const char *ev = clr_yaml_scalar(clr_yaml_node(y, q->value));
        if (!ek || !ev || !*ek || strchr(ek, '=') || asprintf(&env[i], "%s=%s", ek, ev) < 0) {
            env[i] = NULL;
            clr_strv_free(env);
            return clr_yaml_error(y, v, "%s entries must be NAME: string", key);
        }
        i++;
    }
    clr_strv_free(*out);
    *out = env;
    return 0;
}
