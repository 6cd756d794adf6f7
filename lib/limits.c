/* Parsing and validation of limits. Every value from a user goes through here; malformed
 * values ("512x", "-1", "1e3", "") are errors that name the value, never silently clamped. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clearing/limits.h"

/* Fixed-point arithmetic with room for any size times its unit, scaled by 1e9. */
__extension__ typedef unsigned __int128 u128;

/* Parses leading decimal digits with an optional fraction into value * 1e9 (fixed point).
 * Returns the number of characters used, or -1. */
static int parse_fixed(const char *s, u128 *out)
{
    const char *p = s;
    u128 v = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (unsigned)(*p - '0');
        if (v > ((u128)1 << 50))
            return -1;
        p++;
        digits++;
    }
    v *= 1000000000u;
    if (*p == '.') {
        p++;
        u128 scale = 100000000u;
        int frac = 0;
        while (isdigit((unsigned char)*p)) {
            if (frac < 9)
                v += (unsigned)(*p - '0') * scale;
            else if (*p != '0')
                return -1; /* finer than 1e-9: dropping it would silently round the value */
            scale /= 10;
            p++;
            frac++;
        }
        if (frac == 0)
            return -1;
        digits += frac;
    }
    if (digits == 0)
        return -1;
    *out = v;
    return (int)(p - s);
}

int clr_parse_uint(uint64_t *out, const char *text, clr_error *err)
{
    if (!text || !*text)
        return clr_error_set(err, CLR_E_INVALID, 0, "empty number: expected digits");
    uint64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "'%s' is not a whole number (only digits 0-9 are allowed)", text);
        uint64_t digit = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return clr_error_set(err, CLR_E_INVALID, ERANGE, "'%s' is too large", text);
        v = v * 10 + digit;
    }
    *out = v;
    return 0;
}

int clr_parse_size(uint64_t *out, const char *text, clr_error *err)
{
    u128 v;
    if (!text || !*text)
        return clr_error_set(err, CLR_E_INVALID, 0, "empty size: expected e.g. 512m or 1g");
    int n = parse_fixed(text, &v);
    if (n < 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s' is not a size: expected a number with an optional unit "
                             "k, m, g or t (e.g. 512m, 1.5g)", text);
    const char *u = text + n;
    u128 mult = 1;
    if (*u) {
        switch (tolower((unsigned char)*u)) {
        case 'b': mult = 1; break;
        case 'k': mult = 1024; break;
        case 'm': mult = 1024 * 1024; break;
        case 'g': mult = 1024ull * 1024 * 1024; break;
        case 't': mult = 1024ull * 1024 * 1024 * 1024; break;
        default:
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "'%s': unknown unit '%s' (use k, m, g or t)", text, u);
        }
        u++;
        if (mult > 1 && (*u == 'i' || *u == 'I'))
            u++;
        if (mult > 1 && (*u == 'b' || *u == 'B'))
            u++;
        if (*u)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "'%s': unexpected '%s' after the unit", text, u);
    }
    u128 bytes = v * mult;
    if (bytes % 1000000000u)
        return clr_error_set(err, CLR_E_INVALID, 0, "'%s' is not a whole number of bytes", text);
    bytes /= 1000000000u;
    if (bytes > UINT64_MAX / 2)
        return clr_error_set(err, CLR_E_INVALID, ERANGE, "'%s' is too large", text);
    *out = (uint64_t)bytes;
    return 0;
}

int clr_parse_cpus(uint32_t *out, const char *text, clr_error *err)
{
    u128 v;
    if (!text || !*text)
        return clr_error_set(err, CLR_E_INVALID, 0, "empty CPU count: expected e.g. 0.5 or 2");
    int n = parse_fixed(text, &v);
    if (n < 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s' is not a CPU count: expected cores (0.5, 2) or "
                             "millicores (500m)", text);
    const char *u = text + n;
    u128 millis;
    if (*u == 'm' && u[1] == '\0') {
        millis = v / 1000000000u;
        if (v % 1000000000u)
            return clr_error_set(err, CLR_E_INVALID, 0, "'%s': millicores must be whole", text);
    } else if (*u == '\0') {
        if (v % 1000000u)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "'%s': at most three decimals (a thousandth of a core)", text);
        millis = v / 1000000u;
    } else {
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s': unexpected '%s' (expected cores such as 0.5, or 500m)", text,
                             u);
    }
    if (millis > UINT32_MAX)
        return clr_error_set(err, CLR_E_INVALID, ERANGE, "'%s' is too large", text);
    *out = (uint32_t)millis;
    return 0;
}

int clr_parse_duration_ms(uint64_t *out, const char *text, clr_error *err)
{
    u128 v;
    if (!text || !*text)
        return clr_error_set(err, CLR_E_INVALID, 0, "empty duration: expected e.g. 30s or 500ms");
    int n = parse_fixed(text, &v);
    if (n < 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s' is not a duration: expected a number with an optional unit "
                             "ms, s, m or h (e.g. 30s, 500ms)", text);
    const char *u = text + n;
    u128 ms_x1e9;
    if (!*u || strcmp(u, "s") == 0)
        ms_x1e9 = v * 1000;
    else if (strcmp(u, "ms") == 0)
        ms_x1e9 = v;
    else if (strcmp(u, "m") == 0)
        ms_x1e9 = v * 60000;
    else if (strcmp(u, "h") == 0)
        ms_x1e9 = v * 3600000;
    else
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s': unknown unit '%s' (use ms, s, m or h)", text, u);
    if (ms_x1e9 % 1000000000u)
        return clr_error_set(err, CLR_E_INVALID, 0, "'%s' is not a whole number of milliseconds",
                             text);
    ms_x1e9 /= 1000000000u;
    if (ms_x1e9 > UINT32_MAX * 1000ull)
        return clr_error_set(err, CLR_E_INVALID, ERANGE, "'%s' is too long", text);
    *out = (uint64_t)ms_x1e9;
    return 0;
}

void clr_format_size(char *buf, size_t len, uint64_t bytes)
{
    static const char units[] = "kmgt";
    int u = -1;
    while (bytes >= 1024 && bytes % 1024 == 0 && u < 3) {
        bytes /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(buf, len, "%" PRIu64, bytes);
    else
        snprintf(buf, len, "%" PRIu64 "%c", bytes, units[u]);
}

/* How a limit's value is written in its error: a plain number, a size (1.5G), a duration. */
enum range_unit { RANGE_PLAIN, RANGE_SIZE, RANGE_MS };

/* ms as the largest whole unit that writes it exactly: 24h, 90m, 5s, 1500ms. */
static void format_ms(char *buf, size_t len, uint64_t ms)
{
    if (ms && ms % 3600000 == 0)
        snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
    else if (ms && ms % 60000 == 0)
        snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
    else if (ms && ms % 1000 == 0)
        snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void format_value(char *buf, size_t len, uint64_t v, enum range_unit unit)
{
    switch (unit) {
    case RANGE_SIZE:
        clr_format_size(buf, len, v);
        break;
    case RANGE_MS:
        format_ms(buf, len, v);
        break;
    case RANGE_PLAIN:
    default:
        snprintf(buf, len, "%" PRIu64, v);
        break;
    }
}

static int range_u64(const char *what, uint64_t v, uint64_t lo, uint64_t hi,
                     enum range_unit unit, clr_error *err)
{
    if (v >= lo && v <= hi)
        return 0;
    char a[32], b[32], c[32];
    format_value(a, sizeof(a), v, unit);
    format_value(b, sizeof(b), lo, unit);
    format_value(c, sizeof(c), hi, unit);
    return clr_error_set(err, CLR_E_INVALID, ERANGE, "%s %s is out of range: allowed %s..%s", what,
                         a, b, c);
}

int clr_limits_validate(const clr_limits *l, clr_error *err)
{
    if (l->cpu_millis < 100 || l->cpu_millis > 4000)
        return clr_error_set(err, CLR_E_INVALID, ERANGE,
                             "cpus %u.%03u is out of range: allowed 0.1..4", l->cpu_millis / 1000,
                             l->cpu_millis % 1000);
    if (range_u64("memory", l->memory_bytes, 32 * CLR_MIB, 16 * CLR_GIB, RANGE_SIZE, err) < 0 ||
        range_u64("pids", l->pids, 8, 4096, RANGE_PLAIN, err) < 0 ||
        range_u64("lifetime (seconds)", l->lifetime_s, 10, 3600, RANGE_PLAIN, err) < 0 ||
        range_u64("tmp size", l->tmp_bytes, CLR_MIB, 4 * CLR_GIB, RANGE_SIZE, err) < 0 ||
        range_u64("workspace size", l->workspace_bytes, CLR_MIB, 64 * CLR_GIB, RANGE_SIZE, err) <
            0 ||
        range_u64("workspace inodes", l->workspace_inodes, 64, 10000000, RANGE_PLAIN, err) < 0 ||
        range_u64("nofile", l->nofile, 64, 65536, RANGE_PLAIN, err) < 0 ||
        range_u64("file size", l->fsize_bytes, CLR_MIB, 64 * CLR_GIB, RANGE_SIZE, err) < 0)
        return -1;
    return 0;
}

int clr_exec_limits_validate(const clr_exec_limits *l, clr_error *err)
{
    if (range_u64("timeout", l->timeout_ms, 1, 24ull * 3600 * 1000, RANGE_MS, err) < 0 ||
        range_u64("stdout cap", l->stdout_cap, 0, 64 * CLR_MIB, RANGE_SIZE, err) < 0 ||
        range_u64("stderr cap", l->stderr_cap, 0, 64 * CLR_MIB, RANGE_SIZE, err) < 0)
        return -1;
    return 0;
}

bool clr_limits_equal(const clr_limits *a, const clr_limits *b)
{
    return a->cpu_millis == b->cpu_millis && a->memory_bytes == b->memory_bytes &&
           a->pids == b->pids && a->lifetime_s == b->lifetime_s && a->tmp_bytes == b->tmp_bytes &&
           a->workspace_bytes == b->workspace_bytes &&
           a->workspace_inodes == b->workspace_inodes && a->nofile == b->nofile &&
           a->fsize_bytes == b->fsize_bytes;
}
