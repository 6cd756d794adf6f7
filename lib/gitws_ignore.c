/* Git workspaces, .gitignore: git's wildmatch (WM_PATHNAME) and the rules of .gitignore
 * files, chained by directory, every match bounded in steps (gitws_ignore.h,
 * gitws_ignore_internal.h). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gitws_ignore_internal.h"
#include "internal.h"

#define IGNORE_MAX_RULES 10000u
/* Steps one public glob match may take: a .gitignore on a reused branch was written by the
 * sandbox, and patterns such as "*a*a*a*a*b" backtrack. */
#define GLOB_STEP_BUDGET 1000000L

/* ---- gitignore globs (git's wildmatch with WM_PATHNAME) ---- */

static const struct {
    const char *name;
    int (*fn)(int);
} char_classes[] = {
    {"alnum", isalnum}, {"alpha", isalpha}, {"blank", isblank}, {"cntrl", iscntrl},
    {"digit", isdigit}, {"graph", isgraph}, {"lower", islower}, {"print", isprint},
    {"punct", ispunct}, {"space", isspace}, {"upper", isupper}, {"xdigit", isxdigit},
};

/* [:name:] inside a bracket: 1 or 0, -1 for a name git does not know (the pattern is void). */
static int named_class(const char *name, size_t len, unsigned char c)
{
    for (size_t i = 0; i < sizeof(char_classes) / sizeof(char_classes[0]); i++)
        if (strlen(char_classes[i].name) == len && memcmp(char_classes[i].name, name, len) == 0)
            return char_classes[i].fn(c) != 0;
    return -1;
}

static unsigned char class_char(const char **pp)
{
    const char *p = *pp;
    if (p[0] == '\\' && p[1])
        p++;
    *pp = p + 1;
    return (unsigned char)*p;
}

/* The bracket expression at *pp against c; advances *pp past its ']'. 1 match, 0 none, -1 the
 * bracket is never closed (git then matches nothing with the whole pattern). */
static int match_class(const char **pp, unsigned char c)
{
    const char *p = *pp + 1;
    bool negate = *p == '!' || *p == '^';
    if (negate)
        p++;
    bool hit = false;
    for (bool first = true;; first = false) {
        if (*p == '\0')
            return -1;
        if (*p == ']' && !first)
            break;
        size_t n = p[0] == '[' && p[1] == ':' ? strspn(p + 2, "abcdefghijklmnopqrstuvwxyz") : 0;
        if (n && p[2 + n] == ':' && p[3 + n] == ']') {
            int r = named_class(p + 2, n, c);
            if (r < 0)
                return -1;
            hit |= r > 0;
            p += n + 4;
            continue;
        }
        unsigned char lo = class_char(&p), hi = lo;
        if (p[0] == '-' && p[1] != ']' && p[1] != '\0') {
            p++;
            hi = class_char(&p);
        }
        if (lo <= c && c <= hi)
            hit = true;
    }
    *pp = p + 1;
    return hit != negate;
}

/* One pattern element against one path byte: 1 both advanced, 0 mismatch, -1 malformed. */
static int match_one(const char **pp, const char **sp)
{
    const char *p = *pp;
    unsigned char c = (unsigned char)**sp;
    if (c == '\0' || *p == '\0')
        return 0;
    int r;
    if (*p == '?') {
        r = c != '/';
        p++;
    } else if (*p == '[') {
        if (c == '/')
            return 0;
        r = match_class(&p, c);
    } else {
        if (p[0] == '\\' && p[1])
            p++;
        r = (unsigned char)*p == c;
        p++;
    }
    if (r <= 0)
        return r;
    *pp = p;
    (*sp)++;
    return 1;
}

/* "**" is special only as a whole path component; elsewhere it is a plain '*'. */
static bool is_globstar(const char *p, const char *start)
{
    return p[0] == '*' && p[1] == '*' && (p == start || p[-1] == '/') &&
           (p[2] == '/' || p[2] == '\0');
}

static int wildmatch(const char *p, const char *start, const char *s, long *budget);

/* "**" at the end matches everything left; "**" + "/" matches zero or more whole directories,
 * so the rest of the pattern is tried at s and after every '/' of s. */
static int match_globstar(const char *p, const char *start, const char *s, long *budget)
{
    if (p[2] == '\0')
        return 1;
    for (;;) {
        int r = wildmatch(p + 3, start, s, budget);
        if (r != 0)
            return r;
        s = strchr(s, '/');
        if (!s)
            return 0;
        s++;
    }
}

/* 1 match, 0 none, -1 malformed or out of budget. Single stars backtrack only to the latest
 * star (the classic linear-time scheme; a star cannot cross '/', and once a '/' is matched the
 * state is the same whatever the earlier stars took), so only "**" recurses. */
static int wildmatch(const char *p, const char *start, const char *s, long *budget)
{
    const char *star_p = NULL, *star_s = NULL;
    for (;;) {
        if (--*budget < 0)
            return -1;
        if (*p == '*') {
            if (is_globstar(p, start))
                return match_globstar(p, start, s, budget);
            while (*p == '*')
                p++;
            star_p = p;
            star_s = s;
            continue;
        }
        if (*p == '\0' && *s == '\0')
            return 1;
        int r = match_one(&p, &s);
        if (r < 0)
            return -1;
        if (r > 0)
            continue;
        if (!star_p || *star_s == '\0' || *star_s == '/')
            return 0;
        s = ++star_s;
        p = star_p;
    }
}

bool clr_git_glob_match(const char *pattern, const char *path)
{
    long budget = GLOB_STEP_BUDGET;
    return wildmatch(pattern, pattern, path, &budget) == 1;
}

/* ---- .gitignore rules ---- */

typedef struct ignore_rule {
    const char *pattern;
    bool negate;   /* "!pattern": re-include */
    bool dir_only; /* "pattern/": directories only */
    bool anchored; /* a '/' before the end: matched against the path below the file's dir */
} ignore_rule;

struct clr_git_ignore {
    const clr_git_ignore *parent;
    char *dir; /* "" or "a/b" */
    size_t dir_len;
    char *text; /* the file's lines, cut in place; the rules point into it */
    ignore_rule *rules;
    size_t n_rules;
};

void clr_git_ignore_free(clr_git_ignore *ig)
{
    if (!ig)
        return;
    free(ig->dir);
    free(ig->text);
    free(ig->rules);
    free(ig);
}

/* git drops trailing spaces unless the last one is escaped with a backslash. */
static void trim_trailing_spaces(char *s)
{
    char *first_space = NULL;
    for (char *p = s; *p; p++) {
        if (*p == ' ') {
            if (!first_space)
                first_space = p;
            continue;
        }
        first_space = NULL;
        if (*p == '\\' && *++p == '\0')
            return;
    }
    if (first_space)
        *first_space = '\0';
}

static bool parse_rule(ignore_rule *r, char *line)
{
    trim_trailing_spaces(line);
    if (line[0] == '\0' || line[0] == '#')
        return false;
    *r = (ignore_rule){0};
    if (line[0] == '!') {
        r->negate = true;
        line++;
    }
    size_t n = strlen(line);
    if (n > 0 && line[n - 1] == '/') {
        r->dir_only = true;
        line[n - 1] = '\0';
    }
    r->anchored = strchr(line, '/') != NULL;
    if (line[0] == '/')
        line++;
    r->pattern = line;
    return line[0] != '\0';
}

int clr_git_ignore_parse(clr_git_ignore **out, const clr_git_ignore *parent, const char *dir,
                         const char *text, size_t len, clr_error *err)
{
    *out = NULL;
    if (!text)
        text = "", len = 0;
    if (len > IGNORE_MAX_BYTES)
        len = IGNORE_MAX_BYTES;
    _cleanup_ignore_ clr_git_ignore *ig = calloc(1, sizeof(*ig));
    if (!ig)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    ig->parent = parent;
    ig->dir = strdup(dir ? dir : "");
    ig->text = malloc(len + 1);
    size_t max_rules = 1;
    for (const char *q = text; max_rules < IGNORE_MAX_RULES &&
                               (q = memchr(q, '\n', len - (size_t)(q - text)));
         q++)
        max_rules++;
    ig->rules = calloc(max_rules, sizeof(*ig->rules));
    if (!ig->dir || !ig->text || !ig->rules)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    ig->dir_len = strlen(ig->dir);
    memcpy(ig->text, text, len);
    ig->text[len] = '\0';
    for (char *line = ig->text; line && ig->n_rules < max_rules;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (parse_rule(&ig->rules[ig->n_rules], line))
            ig->n_rules++;
        line = nl ? nl + 1 : NULL;
    }
    *out = steal_pointer(&ig);
    return 0;
}

static int rule_matches(const ignore_rule *r, const char *rel, bool is_dir, long *budget)
{
    if (r->dir_only && !is_dir)
        return 0;
    const char *subject = rel;
    if (!r->anchored) {
        const char *slash = strrchr(rel, '/');
        if (slash)
            subject = slash + 1;
    }
    return wildmatch(r->pattern, r->pattern, subject, budget);
}

int clr_gitws_ignore_check(const clr_git_ignore *ig, const char *path, bool is_dir, long *budget)
{
    for (; ig; ig = ig->parent) {
        const char *rel = path;
        if (ig->dir_len > 0) {
            if (strncmp(path, ig->dir, ig->dir_len) != 0 || path[ig->dir_len] != '/')
                continue;
            rel = path + ig->dir_len + 1;
        }
        /* Every rule costs a step, even one skipped as dir-only: 10000 of them on every
         * entry must not run unbounded either. */
        for (size_t i = ig->n_rules; i-- > 0;) {
            int r = --*budget < 0 ? -1 : rule_matches(&ig->rules[i], rel, is_dir, budget);
            if (r == 1)
                return !ig->rules[i].negate;
            if (*budget < 0)
                return -1;
        }
    }
    return 0;
}

bool clr_git_ignored(const clr_git_ignore *ig, const char *path, bool is_dir)
{
    long budget = GLOB_STEP_BUDGET;
    return clr_gitws_ignore_check(ig, path, is_dir, &budget) == 1;
}
