#include <stdio.h>
#include <string.h>

#include "clearing/common.h"
#include "clr-config.h"
#include "internal.h"

/* A message cut at its fixed size may end inside a UTF-8 character (a file name, a command, text
 * from inside a sandbox); the API's JSON could not carry it. The cut moves back before that
 * character's first byte. n is the message's length. */
static void cut_whole_chars(char *m, size_t n)
{
    size_t lead = n;
    while (lead > 0 && n - lead < 4 && ((unsigned char)m[lead - 1] & 0xC0) == 0x80)
        lead--;
    if (lead == 0)
        return;
    unsigned char b = (unsigned char)m[lead - 1];
    size_t want = b >= 0xF8 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (n - (lead - 1) < want)
        m[lead - 1] = '\0';
}

void clr_utf8_trim_cut(char *s)
{
    cut_whole_chars(s, strlen(s));
}

size_t clr_utf8_cut_len(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t cut = max;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) /* s[cut] continues a character */
        cut--;
    return cut;
}

void clr_text_ascii(char *dst, size_t len, const char *src)
{
    size_t i;
    for (i = 0; src[i] && i < len - 1; i++)
        dst[i] = (unsigned char)src[i] < 0x80 ? src[i] : '?';
    dst[i] = '\0';
}

int clr_error_set(clr_error *err, clr_error_code code, int errnum, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    err->errnum = errnum;
    int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(err->message))
        cut_whole_chars(err->message, sizeof(err->message) - 1);
    return -1;
}

int clr_error_prefix(clr_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[256];
    char old[sizeof(err->message)];
    va_list ap;
    va_start(ap, fmt);
    int pn = vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    if (pn >= (int)sizeof(prefix))
        cut_whole_chars(prefix, sizeof(prefix) - 1);
    memcpy(old, err->message, sizeof(old));
    /* Keep as much of both as fits; the message is bounded by design. */
    size_t n = strnlen(prefix, sizeof(prefix));
    if (n > sizeof(err->message) - 3)
        n = sizeof(err->message) - 3;
    memcpy(err->message, prefix, n);
    err->message[n] = '\0';
    cut_whole_chars(err->message, n);
    n = strlen(err->message);
    memcpy(err->message + n, ": ", 2);
    size_t rest = sizeof(err->message) - n - 3;
    size_t m = strnlen(old, sizeof(old));
    if (m > rest)
        m = rest;
    memcpy(err->message + n + 2, old, m);
    err->message[n + 2 + m] = '\0';
    cut_whole_chars(err->message, n + 2 + m);
    return -1;
}

const char *clr_error_code_name(clr_error_code code)
{
    switch (code) {
    case CLR_E_NONE: return "none";
    case CLR_E_INVALID: return "invalid";
    case CLR_E_NOT_FOUND: return "not_found";
    case CLR_E_CONFLICT: return "conflict";
    case CLR_E_LIMIT: return "limit";
    case CLR_E_UNAVAILABLE: return "unavailable";
    case CLR_E_DENIED: return "denied";
    case CLR_E_TIMEOUT: return "timeout";
    case CLR_E_ENGINE: return "engine";
    case CLR_E_NO_SPACE: return "no_space";
    case CLR_E_INTERNAL: return "internal";
    case CLR_E_UNSUPPORTED: return "unsupported";
    default: return "unknown";
    }
}

const char *clr_version(void)
{
    return CLR_VERSION;
}
