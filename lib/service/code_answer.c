/* code_answer: the code bridge's output read back — its lines, the cell's output cap applied
 * again, and the answer checked and rebuilt from what a bridge (written by the sandbox's side,
 * so untrusted) printed. See code.h. */
#include <string.h>

#include "internal.h"

#include "code.h"
#include "rows.h"

#define LINES_PENDING_MAX 4
#define LINES_VALUES_SLACK 4096 /* values an answer holds beside its outputs' JSON */
#define LINES_BUF_KEEP (64 * 1024)
#define MESSAGE_MAX 400 /* an answer's message: the bridge's are a sentence */

/* ---- a cell's output cap, applied again ----
 * The bridge caps a cell's output at output_cap, but it runs inside the sandbox, next to the
 * cell's code, which can replace it or write past it: its cap is a courtesy, this one is the
 * bound. The same rules as the bridge's Cell.take and Cell.whole (code_bridge.py), so that an
 * honest bridge's answer passes unchanged: UTF-8 bytes; a text is cut before the character
 * that would cross the cap; an application/json value or an image is kept whole or dropped, and
 * a dropped one takes no room from what follows. */
struct code_cap {
    uint64_t cap, used;
    bool truncated; /* something was cut or dropped */
};

/* The string v, or as much of it as the room left holds (counted then); "" when none is left.
 * v is UTF-8 (jansson checked it). */
static json_t *cap_take(struct code_cap *c, json_t *v)
{
    const char *t = json_string_value(v);
    size_t n = json_string_length(v);
    uint64_t room = c->cap > c->used ? c->cap - c->used : 0;
    if (n > room) {
        c->truncated = true;
        n = clr_utf8_cut_len(t, n, (size_t)room);
    }
    c->used += n;
    return json_stringn(t, n);
}

/* Whether n more bytes fit whole (counted then); when not, truncated and nothing counted. */
static bool cap_whole(struct code_cap *c, size_t n)
{
    if (c->used + n > c->cap) {
        c->truncated = true;
        return false;
    }
    c->used += n;
    return true;
}

struct code_lines {
    char *buf;
    size_t len, cap, max;
    bool skipping; /* inside a line that went past max: dropped up to its end */
    char broken[200];
    json_t *pending[LINES_PENDING_MAX];
    size_t pending_values[LINES_PENDING_MAX]; /* each one's lines_values_bound */
    size_t npending;
    /* JSON values a line may hold, and the queued lines together: the cell's (half its
     * output_cap, with slack), LINES_VALUES_SLACK between cells. */
    size_t values_max, values_pending;
    /* Output events of the cell in flight go here as they come (under code_lock), their texts
     * held to the cell's output_cap together. */
    clr_service_event_cb on_event;
    void *ctx;
    struct code_cap events;
    /* Set: every line is dropped, none breaks the reader, until one that names this nonce (the
     * answer to a sync request: what came before it is an adopted bridge's replayed past). */
    char resync[40];
};

/* ---- the line reader ---- */

struct code_lines *svc_code_lines_new(size_t line_max)
{
    struct code_lines *r = calloc(1, sizeof(*r));
    if (r) {
        r->max = line_max;
        r->values_max = LINES_VALUES_SLACK;
    }
    return r;
}

void svc_code_lines_free(struct code_lines *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->npending; i++)
        json_decref(r->pending[i]);
    free(r->buf);
    free(r);
}

static void lines_break(struct code_lines *r, const char *why)
{
    if (r->resync[0])
        return; /* a replayed past, dropped whatever it holds */
    if (!r->broken[0])
        snprintf(r->broken, sizeof(r->broken), "%s", why);
    clr_utf8_trim_cut(r->broken);
}

/* At most how many JSON values a line can make the parser allocate: one per '[' and '{', one
 * per ',' and the first, counted outside strings (an object's key costs about a value). */
static size_t lines_values_bound(const char *s, size_t len)
{
    size_t n = 1;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (in_string) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_string = false;
        } else if (s[i] == '"') {
            in_string = true;
        } else if (s[i] == '[' || s[i] == '{' || s[i] == ',') {
            n++;
        }
    }
    return n;
}

/* A complete line: an object with a string "event"; output events go to the cell's callback,
 * the rest are queued for the cell. */
static void lines_one(struct code_lines *r, const char *line, size_t len)
{
    if (len == 0)
        return;
    if (r->resync[0]) {
        if (memmem(line, len, r->resync, strlen(r->resync)))
            r->resync[0] = '\0'; /* the sync's answer: what follows is the bridge's now */
        return;
    }
    /* A value costs the parser tens of bytes where the line may spend two on it ("0,"): a line
     * of its cap in such values would cost the daemon twenty times the line. An honest answer's
     * JSON values count against the cell's output_cap at two bytes or more each: it holds at
     * most half the cap in values, and the slack. Counted before parsing, in one pass. */
    size_t values = lines_values_bound(line, len);
    if (values > r->values_max) {
        lines_break(r, "the bridge wrote a line with more JSON values than an answer can hold");
        return;
    }
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    const char *ev = json_string_value(json_object_get(j, "event"));
    if (!json_is_object(j) || !ev) {
        json_decref(j);
        lines_break(r, "the bridge wrote a line that is not a JSON object with an event");
        return;
    }
    if (strcmp(ev, "stdout") == 0 || strcmp(ev, "stderr") == 0) {
        json_t *text = json_object_get(j, "text");
        json_t *kept = r->on_event && json_is_string(text) ? cap_take(&r->events, text) : NULL;
        if (kept && json_string_length(kept) > 0) {
            json_t *out = json_pack("{s:s, s:o}", "event", ev, "text", kept);
            r->on_event(r->ctx, out);
            json_decref(out);
        } else {
            json_decref(kept);
        }
        json_decref(j);
        return;
    }
    /* Queued answers wait for a cell to take them: together, no more than one answer's values
     * (a bridge printing lines between cells would otherwise keep four of them parsed). */
    if (r->npending == LINES_PENDING_MAX || r->values_pending + values > r->values_max) {
        json_decref(j);
        lines_break(r, "the bridge wrote answers nobody asked for");
        return;
    }
    r->values_pending += values;
    r->pending_values[r->npending] = values;
    r->pending[r->npending++] = j;
}

void svc_code_lines_feed(struct code_lines *r, const uint8_t *data, size_t len)
{
    while (len > 0) {
        const uint8_t *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        if (!r->skipping && r->len + n > r->max) {
            r->skipping = true;
            r->len = 0;
            lines_break(r, "the bridge wrote a line longer than its cap");
        }
        if (!r->skipping && n > 0) {
            if (r->len + n > r->cap) {
                size_t ncap = r->cap ? r->cap : 4096;
                while (ncap < r->len + n)
                    ncap *= 2;
                char *m = realloc(r->buf, ncap < r->max ? ncap : r->max);
                if (!m) {
                    r->skipping = true;
                    lines_break(r, "out of memory reading the bridge");
                } else {
                    r->buf = m;
                    r->cap = ncap < r->max ? ncap : r->max;
                }
            }
            if (!r->skipping) {
                memcpy(r->buf + r->len, data, n);
                r->len += n;
            }
        }
        if (!nl)
            return;
        if (!r->skipping)
            lines_one(r, r->buf, r->len);
        r->skipping = false;
        r->len = 0;
        /* A long line's buffer is not kept for the session's life: up to the line cap a
         * session, for as long as the sandbox lives, would add up over sessions. */
        if (r->cap > LINES_BUF_KEEP) {
            free(r->buf);
            r->buf = NULL;
            r->cap = 0;
        }
        data += n + 1;
        len -= n + 1;
    }
}

void svc_code_lines_on_event(struct code_lines *r, clr_service_event_cb cb, void *ctx,
                             uint64_t cap)
{
    r->on_event = cb;
    r->ctx = ctx;
    r->events = (struct code_cap){.cap = cap};
    uint64_t half = cap / 2 < r->max / 16 ? cap / 2 : r->max / 16;
    r->values_max = (size_t)half + LINES_VALUES_SLACK;
}

void svc_code_lines_resync(struct code_lines *r, const char *nonce)
{
    for (size_t i = 0; i < r->npending; i++)
        json_decref(r->pending[i]);
    r->npending = 0;
    r->values_pending = 0;
    r->broken[0] = '\0';
    snprintf(r->resync, sizeof(r->resync), "%s", nonce);
}

bool svc_code_lines_resyncing(const struct code_lines *r)
{
    return r->resync[0] != '\0';
}

bool svc_code_lines_truncated(const struct code_lines *r)
{
    return r->events.truncated;
}

json_t *svc_code_lines_take(struct code_lines *r, const char **broken)
{
    if (broken)
        *broken = r->broken;
    if (r->npending == 0)
        return NULL;
    json_t *j = r->pending[0];
    r->values_pending -= r->pending_values[0];
    memmove(r->pending, r->pending + 1, (r->npending - 1) * sizeof(r->pending[0]));
    memmove(r->pending_values, r->pending_values + 1,
            (r->npending - 1) * sizeof(r->pending_values[0]));
    r->npending--;
    return j;
}

/* ---- the answer ---- */


/* The statuses a bridge may give a cell (with the daemon's own oom and sandbox_failed, the
 * API's: docs/openapi.yaml CodeResult). Any other is a broken protocol, answered died:
 * "restarted" too, which is no cell's status (whether its kernel is a fresh one is the boolean
 * restarted; only POST .../code/restart, the daemon's own answer, says status restarted). */
static bool known_status(const char *s)
{
    static const char *const ok[] = {"ok", "error", "timeout", "died", NULL};
    for (size_t i = 0; s && ok[i]; i++) {
        if (strcmp(s, ok[i]) == 0)
            return true;
    }
    return false;
}

/* A bundle of outputs by MIME type: the types the bridge gives (code_bridge.py's MIMES), text
 * as strings, application/json any JSON value, each held to the cell's cap as the bridge holds
 * it: a text cut, a JSON value (counted as the compact JSON it is sent as) or an image whole or
 * dropped. An empty value, or a text cut to nothing, is dropped. Each value kept also costs its
 * type's name and BUNDLE_ENTRY_COST: without it a cell printing thousands of displays of one
 * empty or one-byte value each would answer with megabytes that its cap never counted. */
#define BUNDLE_ENTRY_COST 8 /* the quotes, colon and comma around a name and its value */
static json_t *bundle(struct code_cap *c, json_t *b)
{
    static const char *const mimes[] = {"text/plain", "text/html", "text/markdown",
                                        "application/json", "image/png", "image/jpeg",
                                        "image/svg+xml"};
    if (!json_is_object(b))
        return json_null();
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof(mimes) / sizeof(mimes[0]); i++) {
        json_t *v = json_object_get(b, mimes[i]);
        bool json = strcmp(mimes[i], "application/json") == 0;
        /* As the bridge: null and "" are no value, of any type. */
        if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
            (!json && !json_is_string(v)))
            continue;
        /* The entry's cost first (it is given back when the value is not kept). */
        size_t cost = strlen(mimes[i]) + BUNDLE_ENTRY_COST;
        if (!cap_whole(c, cost))
            continue;
        bool kept = false;
        if (json) {
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            kept = text && cap_whole(c, strlen(text));
            if (kept)
                json_object_set(o, mimes[i], v);
            free(text);
        } else if (strncmp(mimes[i], "image/", 6) == 0) {
            kept = cap_whole(c, json_string_length(v));
            if (kept)
                json_object_set(o, mimes[i], v);
        } else {
            json_t *part = cap_take(c, v);
            kept = json_string_length(part) > 0;
            if (kept)
                json_object_set(o, mimes[i], part);
            json_decref(part);
        }
        if (!kept)
            c->used -= cost;
    }
    return o;
}

/* A text field of the answer: a string held to the cap, "" for anything else. */
static json_t *capped_text(struct code_cap *c, json_t *v)
{
    return json_is_string(v) ? cap_take(c, v) : json_string("");
}

json_t *svc_code_answer(json_t *line, uint64_t cap)
{
    const char *status = json_string_value(json_object_get(line, "status"));
    if (strcmp(svc_code_str_or(json_object_get(line, "event"), ""), "result") != 0 ||
        !known_status(status))
        return NULL;
    struct code_cap c = {.cap = cap};
    json_t *a = json_pack("{s:s}", "status", status);
    json_t *v = json_object_get(line, "execution_count");
    json_object_set_new(a, "execution_count",
                        json_is_integer(v) && json_integer_value(v) >= 0 ? json_copy(v)
                                                                         : json_null());
    json_object_set_new(a, "stdout", capped_text(&c, json_object_get(line, "stdout")));
    json_object_set_new(a, "stderr", capped_text(&c, json_object_get(line, "stderr")));
    json_object_set_new(a, "result", bundle(&c, json_object_get(line, "result")));
    json_t *displays = json_array(), *d;
    size_t i;
    json_array_foreach(json_object_get(line, "displays"), i, d)
    {
        json_t *b = json_is_object(d) ? bundle(&c, d) : NULL;
        if (json_object_size(b) > 0) /* as the bridge: a display with nothing kept is none */
            json_array_append(displays, b);
        json_decref(b);
    }
    json_object_set_new(a, "displays", displays);
    json_t *e = json_object_get(line, "error");
    if (json_is_object(e)) {
        /* In this order (not as a call's arguments, whose order C leaves open): the cap is
         * spent in it. */
        json_t *name = capped_text(&c, json_object_get(e, "name"));
        json_t *value = capped_text(&c, json_object_get(e, "value"));
        json_t *tb = capped_text(&c, json_object_get(e, "traceback"));
        json_object_set_new(a, "error", json_pack("{s:o, s:o, s:o}", "name", name, "value",
                                                  value, "traceback", tb));
    } else {
        json_object_set_new(a, "error", json_null());
    }
    json_object_set_new(a, "truncated",
                        json_boolean(c.truncated || json_is_true(json_object_get(line,
                                                                                 "truncated"))));
    json_object_set_new(a, "restarted", json_boolean(json_is_true(json_object_get(line,
                                                                                  "restarted"))));
    /* Not output: the bridge's own sentence, bounded on its own. */
    v = json_object_get(line, "message");
    json_object_set_new(a, "message",
                        json_is_string(v)
                            ? json_stringn(json_string_value(v),
                                           clr_utf8_cut_len(json_string_value(v),
                                                            json_string_length(v), MESSAGE_MAX))
                            : json_null());
    return a;
}

/* ---- answers the daemon makes itself ---- */

json_t *svc_code_own_answer(const char *status, bool restarted, const char *message)
{
    return json_pack("{s:s, s:n, s:s, s:s, s:n, s:[], s:n, s:b, s:b, s:s}", "status", status,
                     "execution_count", "stdout", "", "stderr", "", "result", "displays",
                     "error", "truncated", 0, "restarted", restarted, "message", message);
}

json_t *svc_code_sandbox_gone(clr_service *svc, const char *id)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1], msg[400];
    clr_error err = CLR_ERROR_INIT;
    if (svc_row_state(svc, id, state, reason, &err) < 0) {
        if (err.code != CLR_E_NOT_FOUND)
            return NULL; /* unknown: the bridge's own account stands */
        snprintf(msg, sizeof(msg), "the sandbox's record is gone: its code session ended");
    } else if (strcmp(state, CLR_STATE_RUNNING) == 0) {
        return NULL;
    } else if (strcmp(state, CLR_STATE_LOST) == 0) {
        snprintf(msg, sizeof(msg),
                 "the sandbox was lost while the cell ran (%s); its workspace can still be read "
                 "(files, diff) until it is destroyed",
                 reason[0] ? reason : "unknown cause");
    } else {
        /* destroy_reason says by what: client (DELETE), expired (its lifetime), idle (the
         * reaper), or a plan's reason. */
        snprintf(msg, sizeof(msg), "the sandbox was %s while the cell ran (reason: %s)", state,
                 reason[0] ? reason : "unknown");
    }
    clr_utf8_trim_cut(msg);
    return svc_code_own_answer("sandbox_failed", false, msg);
}
