/* Flood control for the audit log (see clr_audit_denied in include/clearing/audit.h): denials
 * come at the attacker's rate, so the first from a source is recorded at once and the rest are
 * counted, one record per aggregate_ms; a full table counts new sources together per action.
 * A record that cannot be written gives its count back to its entry, for the next interval.
 * Its table has a lock of its own, never held across an append (audit_chain.c, below it). */
#include <stdio.h>
#include <string.h>

#include "audit_internal.h"

static char *bounded_dup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strnlen(s, CLR_AUDIT_FIELD_MAX);
    return strndup(s, n);
}

void audit_denial_clear(struct denial *d)
{
    free(d->key);
    free(d->source);
    free(d->actor);
    free(d->sandbox);
    free(d->action);
    free(d->outcome);
    json_decref(d->last);
    memset(d, 0, sizeof(*d));
}

static bool denial_is(const struct denial *d, const char *source, const char *sandbox,
                      const char *action)
{
    return d->used && strcmp(d->action, action) == 0 &&
           strncmp(d->key, source, CLR_AUDIT_FIELD_MAX) == 0 &&
           (d->sandbox ? sandbox && strcmp(d->sandbox, sandbox) == 0 : !sandbox);
}

static int denial_fill(struct denial *d, const char *source, const char *actor,
                       const char *sandbox, const char *action, const char *outcome,
                       json_t *details, uint64_t now)
{
    d->used = true;
    json_t *src = clr_audit_text(source, strlen(source), CLR_AUDIT_FIELD_MAX);
    d->source = src ? strdup(json_string_value(src)) : NULL;
    json_decref(src);
    d->key = bounded_dup(source);
    d->actor = bounded_dup(actor ? actor : "unknown");
    d->sandbox = bounded_dup(sandbox);
    d->action = bounded_dup(action);
    d->outcome = bounded_dup(outcome);
    d->last = details;
    d->since_ms = now;
    d->pending = 0;
    if (!d->key || !d->source || !d->actor || (sandbox && !d->sandbox) || !d->action || !d->outcome) {
        audit_denial_clear(d);
        return -1;
    }
    return 0;
}

/* A record to write once the denial table's lock is released, and the entry it came from. */
struct denial_record {
    char *actor, *sandbox, *action, *outcome;
    json_t *details;
    struct denial *from;
    char *key; /* from's key when taken: the entry may have been reused since */
    uint64_t count;
};

/* A record that was not written: its count goes back to its entry, if that still is the same
 * source, and is written with the entry's next record. Otherwise it is lost, and logged. */
static void denial_give_back(clr_audit *a, struct denial *from, const char *key,
                             const char *sandbox, const char *action, uint64_t count)
{
    bool back = false;
    pthread_mutex_lock(&a->denial_lock);
    if (from && key && denial_is(from, key, sandbox, action)) {
        from->pending += count;
        back = true;
    }
    pthread_mutex_unlock(&a->denial_lock);
    if (!back)
        clr_log(CLR_LOG_ERROR, "audit.denials_lost", "action", action, "detail",
                "a count of denials could not be written, and its source is no longer tracked",
                NULL);
}

/* Takes d's pending count into r (details: the latest, with source, count, interval). */
static int denial_take(clr_audit *a, struct denial *d, struct denial_record *r, uint64_t now)
{
    json_t *det = json_deep_copy(d->last);
    if (!det)
        det = json_object();
    json_object_set_new(det, "source", json_string(d->source));
    json_object_set_new(det, "count", json_integer((json_int_t)d->pending));
    json_object_set_new(det, "interval_ms", json_integer((json_int_t)a->aggregate_ms));
    r->details = det;
    r->actor = strdup(d->actor);
    r->sandbox = d->sandbox ? strdup(d->sandbox) : NULL;
    r->action = strdup(d->action);
    r->outcome = strdup(d->outcome);
    r->from = d;
    r->key = strdup(d->key);
    r->count = d->pending;
    d->pending = 0;
    d->since_ms = now;
    return r->actor && r->action && r->outcome && r->key && (!d->sandbox || r->sandbox) ? 0 : -1;
}

static void denial_record_free(struct denial_record *r)
{
    free(r->actor);
    free(r->sandbox);
    free(r->action);
    free(r->outcome);
    free(r->key);
    json_decref(r->details);
    memset(r, 0, sizeof(*r));
}

static int denial_write(clr_audit *a, struct denial_record *r, clr_error *err)
{
    int rc = clr_audit_append(a, r->actor, r->sandbox, r->action, r->outcome, r->details, err);
    if (rc < 0)
        denial_give_back(a, r->from, r->key, r->sandbox, r->action, r->count);
    denial_record_free(r);
    return rc;
}

int clr_audit_denied(clr_audit *a, const char *source, const char *actor, const char *sandbox,
                     const char *action, const char *outcome, json_t *details, clr_error *err)
{
    json_t *det = audit_bounded_details(details, 0);
    if (!det)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    uint64_t now = audit_mono_ms();
    struct denial_record rec = {0};
    bool write = false, first = false, own = false;
    pthread_mutex_lock(&a->denial_lock);
    struct denial *d = NULL, *free_slot = NULL, *filled = NULL;
    for (size_t i = 0; i < CLR_AUDIT_SOURCES_MAX; i++) {
        if (denial_is(&a->denials[i], source, sandbox, action)) {
            d = &a->denials[i];
            break;
        }
        if (!a->denials[i].used && !free_slot)
            free_slot = &a->denials[i];
    }
    if (!d && free_slot) {
        /* A new source: recorded at once, as it came. */
        if (denial_fill(free_slot, source, actor, sandbox, action, outcome, json_incref(det),
                        now) == 0) {
            first = own = true;
            filled = free_slot;
        }
    } else if (!d) {
        /* The table is full: new sources are counted together, per action, never unbounded
         * memory. The sandbox of the latest is in its details. */
        if (sandbox)
            json_object_set_new(det, "sandbox", json_string(sandbox));
        struct denial *unused = NULL;
        for (size_t i = 0; i < AUDIT_OTHERS_MAX && !d; i++) {
            if (denial_is(&a->others[i], "others", NULL, action))
                d = &a->others[i];
            else if (!a->others[i].used && !unused)
                unused = &a->others[i];
        }
        if (!d && !unused)
            d = &a->others[AUDIT_OTHERS_MAX - 1]; /* more actions than buckets: share the last */
        if (!d) {
            if (denial_fill(unused, "others", actor, NULL, action, outcome, json_incref(det),
                            now) == 0) {
                first = true;
                filled = unused;
            }
        }
    }
    if (d) {
        json_decref(d->last);
        d->last = json_incref(det);
        d->pending++;
        if (now - d->since_ms >= a->aggregate_ms)
            write = denial_take(a, d, &rec, now) == 0;
    }
    pthread_mutex_unlock(&a->denial_lock);
    if (!write)
        denial_record_free(&rec);
    int rc = 0;
    if (!first && !d) {
        /* No room to track it (out of memory): recorded as it came, never dropped. */
        json_object_set_new(det, "count", json_integer(1));
        rc = clr_audit_append(a, actor, sandbox, action, outcome, det, err);
    } else if (first) {
        json_object_set_new(det, "source",
                            own ? clr_audit_text(source, strlen(source), CLR_AUDIT_FIELD_MAX)
                                : json_string("others"));
        json_object_set_new(det, "count", json_integer(1));
        rc = clr_audit_append(a, actor, own ? sandbox : NULL, action, outcome, det, err);
        if (rc < 0)
            denial_give_back(a, filled, own ? source : "others", own ? sandbox : NULL, action, 1);
    } else if (write) {
        rc = denial_write(a, &rec, err);
    }
    json_decref(det);
    return rc;
}

/* Writes pending counts whose interval passed (all of them if all), and forgets sources that
 * were quiet for two intervals, so their next denial is recorded at once again. */
void audit_denials_flush(clr_audit *a, bool all)
{
    size_t n = CLR_AUDIT_SOURCES_MAX + AUDIT_OTHERS_MAX;
    struct denial_record *recs = calloc(n, sizeof(*recs));
    if (!recs)
        return;
    size_t m = 0;
    uint64_t now = audit_mono_ms();
    pthread_mutex_lock(&a->denial_lock);
    for (size_t i = 0; i < n; i++) {
        struct denial *d =
            i < CLR_AUDIT_SOURCES_MAX ? &a->denials[i] : &a->others[i - CLR_AUDIT_SOURCES_MAX];
        if (!d->used)
            continue;
        uint64_t age = now - d->since_ms;
        if (d->pending && (all || age >= a->aggregate_ms)) {
            if (denial_take(a, d, &recs[m], now) == 0)
                m++;
            else
                denial_record_free(&recs[m]);
        } else if (!d->pending && (all || age >= 2ull * a->aggregate_ms)) {
            audit_denial_clear(d);
        }
    }
    pthread_mutex_unlock(&a->denial_lock);
    for (size_t i = 0; i < m; i++) {
        clr_error err = CLR_ERROR_INIT;
        if (denial_write(a, &recs[i], &err) < 0)
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", err.message, NULL);
    }
    free(recs);
}
