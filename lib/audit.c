/* The audit log (see include/clearing/audit.h): opening, closing and the periodic tick, the
 * wiring over its modules (audit_internal.h lists them, each calling only those below it). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <syslog.h>

#include "audit_internal.h"

void clr_audit_tick(clr_audit *a)
{
    audit_denials_flush(a, false);
    pthread_mutex_lock(&a->lock);
    bool due = a->uncheckpointed && audit_mono_ms() - a->checkpoint_at_ms >= a->checkpoint_ms;
    pthread_mutex_unlock(&a->lock);
    clr_error err = CLR_ERROR_INIT;
    if (due && clr_audit_checkpoint(a, &err) < 0)
        clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", err.message, NULL);
}

/* At open: learns the head (and cuts a torn tail, recording that it did), so a broken log is an
 * error at start; signs the head of a log that has no checkpoint yet. */
static int learn_head(clr_audit *a, clr_error *err)
{
    if (flock(a->lock_fd, LOCK_EX) < 0)
        return 0; /* the first append takes the lock and learns the head then */
    bool cut = false;
    off_t cut_bytes = 0;
    int rc = audit_load_head(a, &cut, &cut_bytes, err);
    if (rc == 0 && cut) {
        json_auto_t *d = json_pack("{s:I}", "bytes", (json_int_t)cut_bytes);
        rc = audit_append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
    }
    /* A log from before checkpoints (or whose checkpoint was lost): sign its head now. */
    char cp[4200];
    audit_side_path(cp, sizeof(cp), a->path, "checkpoint");
    if (rc == 0 && (a->seq > 0 || cut) && access(cp, F_OK) < 0) {
        /* Not fatal: the checkpoint guards the log, it does not stand in for it. When the
         * disk is full the next append says so, naming the log, and fails closed. */
        clr_error cerr = CLR_ERROR_INIT;
        if (audit_checkpoint_locked(a, &cerr) < 0)
            clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", cerr.message, NULL);
    }
    flock(a->lock_fd, LOCK_UN);
    return rc;
}

int clr_audit_open(clr_audit **out, const clr_audit_options *opts, clr_error *err)
{
    if (!opts->path || !*opts->path)
        return clr_error_set(err, CLR_E_INVALID, 0, "no audit log path");
    clr_audit *a = calloc(1, sizeof(*a));
    if (!a)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    a->path = strdup(opts->path);
    a->rotate_bytes = opts->rotate_bytes;
    a->syslog = opts->syslog;
    a->keep = opts->keep;
    a->disk_budget = opts->disk_budget;
    a->aggregate_ms = opts->aggregate_ms ? opts->aggregate_ms : CLR_AUDIT_DEFAULT_AGGREGATE_MS;
    a->checkpoint_ms = opts->checkpoint_ms ? opts->checkpoint_ms : CLR_AUDIT_DEFAULT_CHECKPOINT_MS;
    a->checkpoint_at_ms = audit_mono_ms();
    a->lock_fd = -1;
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->denial_lock, NULL);
    pthread_mutex_init(&a->state_lock, NULL);
    pthread_mutex_init(&a->sync_lock, NULL);
    pthread_cond_init(&a->sync_cond, NULL);
    if (!a->path)
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (!a->path || audit_open_log(a, err) < 0) {
        free(a->path);
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->denial_lock);
        pthread_mutex_destroy(&a->state_lock);
        pthread_mutex_destroy(&a->sync_lock);
        pthread_cond_destroy(&a->sync_cond);
        free(a);
        return -1;
    }
    a->ckey = opts->checkpoint_key;
    if (!a->ckey && audit_load_key(a, err) < 0) {
        clr_audit_close(a);
        return -1;
    }
    if (a->syslog)
        openlog("clearing-audit", LOG_PID, LOG_AUTHPRIV);
    char lock_path[4200];
    snprintf(lock_path, sizeof(lock_path), "%s.lock", a->path);
    a->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->lock_fd < 0) {
        clr_error_set(err, CLR_E_UNAVAILABLE, errno, "cannot open the audit lock %s: %s",
                      lock_path, strerror(errno));
        clr_audit_close(a);
        return -1;
    }
    if (learn_head(a, err) < 0) {
        clr_audit_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

void clr_audit_close(clr_audit *a)
{
    if (!a)
        return;
    if (a->lock_fd >= 0) {
        /* Counts not yet recorded (also when the log's last append failed and it is closed:
         * each append opens it again), then the head as this process leaves it. */
        audit_denials_flush(a, true);
        clr_error err = CLR_ERROR_INIT;
        if (a->fd >= 0 && a->uncheckpointed && clr_audit_checkpoint(a, &err) < 0)
            clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", err.message, NULL);
    }
    for (size_t i = 0; i < CLR_AUDIT_SOURCES_MAX; i++)
        audit_denial_clear(&a->denials[i]);
    for (size_t i = 0; i < AUDIT_OTHERS_MAX; i++)
        audit_denial_clear(&a->others[i]);
    if (a->fd >= 0)
        close(a->fd);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    pthread_mutex_destroy(&a->denial_lock);
    pthread_mutex_destroy(&a->state_lock);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->sync_lock);
    pthread_cond_destroy(&a->sync_cond);
    free(a->path);
    free(a);
}
