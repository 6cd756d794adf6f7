/* code_adopt: a code session's kernel that a fork or a restore brings back from its snapshot,
 * taken over as the sandbox's session. See code.h. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include "channels.h"
#include "code.h"
#include "code_internal.h"
#include "engines.h"
#include "rows.h"

json_t *svc_code_on_channel(clr_service *svc, const char *id)
{
    json_t *e = NULL;
    pthread_mutex_lock(&svc_code_lock);
    for (const struct code_session *s = svc->codes; s && !e; s = s->next) {
        if (s->chan && strcmp(s->sandbox_id, id) == 0)
            e = json_pack("{s:b, s:I}", "code", true, "channel", (json_int_t)s->chan);
    }
    pthread_mutex_unlock(&svc_code_lock);
    return e;
}

/* The bridge on channel chan of sandbox id's channel, which its agent runs (restored from a
 * snapshot), taken as the session's (which holds its turn and no kernel): its thread waits for
 * it as for one it started. */
static int bridge_adopt(struct code_session *s, uint32_t chan, clr_error *err)
{
    struct code_lines *lines = svc_code_lines_new(LINE_MAX);
    if (!lines)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    /* The agent replays what it kept of the bridge's output (old answers, the first maybe cut
     * mid-line): read past, up to the answer to a sync sent after the claim. */
    char nonce[33];
    svc_code_nonce(nonce);
    svc_code_lines_resync(lines, nonce);
    pthread_mutex_lock(&svc_code_lock);
    s->lines = lines;
    pthread_mutex_unlock(&svc_code_lock);
    int rc = svc_engine_get(s->svc, &s->eng, err);
    if (rc == 0)
        rc = svc_live_get(s->svc, s->eng, s->sandbox_id, &s->lv, err);
    if (rc == 0 && !s->lv->ch)
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the sandbox's live channel is closed");
    if (rc == 0) {
        clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
        o.background = o.stream = o.keep_stdin_open = true;
        o.limits.stdout_cap = BRIDGE_QUEUE;
        o.limits.stderr_cap = BRIDGE_ERR_KEEP;
        o.on_output = svc_code_bridge_output;
        o.ctx = s;
        o.channel = s->lv->ch;
        o.channel_id = chan;
        rc = clr_exec_adopt(&s->h, s->eng, s->lv->sb, &o, err);
    }
    if (rc == 0 && pthread_create(&s->thread, NULL, svc_code_bridge_main, s) != 0)
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, EAGAIN, "cannot start a thread");
    else if (rc == 0)
        s->thread_started = true;
    if (rc == 0) {
        pthread_mutex_lock(&svc_code_lock);
        s->chan = chan;
        pthread_mutex_unlock(&svc_code_lock);
        /* A lone newline first: a request the snapshot cut (the rest of it went to the
         * snapshot's sandbox) then ends there, and its error names no nonce, instead of
         * swallowing the sync. */
        json_t *sync = json_pack("{s:s, s:s}", "op", "sync", "nonce", nonce);
        rc = clr_exec_write_stdin(s->h, "\n", 1, err);
        if (rc == 0)
            rc = sync ? svc_code_bridge_send(s, sync, err)
                      : clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        json_decref(sync);
    }
    if (rc == 0)
        return 0;
    svc_code_bridge_kill(s);
    return -1;
}

int svc_code_adopt(clr_service *svc, const char *id, const char *tenant, const char *snapshot,
                   uint32_t chan, const char *actor, clr_error *err)
{
    /* After the cells already in flight (on the old container's channel, which is gone: they
     * end at once; those behind them start no kernel while the mark is set); a kernel of this
     * sandbox that runs now is not the snapshot's. */
    struct code_session *s = svc_code_session_take(svc, id, tenant, chan != 0, err);
    if (!s) {
        if (err->code != CLR_E_NONE)
            svc_audit_refusal(svc, actor, id, "code.adopt", err);
        return err->code != CLR_E_NONE ? -1 : 0;
    }
    /* This sandbox's session had a kernel or a notice: its next cell says what became of it
     * (a fork's session is new, and says something only when the snapshot's kernel is not
     * taken over). */
    bool had = s->h != NULL || s->lost[0];
    if (s->h)
        svc_code_bridge_end(s);
    int rc = 0;
    if (chan) {
        json_t *d = json_pack("{s:s, s:I}", "snapshot", snapshot, "channel", (json_int_t)chan);
        rc = svc_code_session_admit(s, err);
        if (rc == 0 && (clr_audit_append(svc->audit, actor, id, "code.adopt", "ok", d, err) < 0 ||
                        bridge_adopt(s, chan, err) < 0)) {
            svc_code_session_release(s);
            rc = -1;
        }
        if (rc < 0)
            svc_audit_failure_with(svc, actor, id, "code.adopt", err, NULL, d);
        json_decref(d);
    }
    if (rc < 0)
        snprintf(s->lost, sizeof(s->lost),
                 "snapshot %s's kernel could not be taken over (%.80s): this is a fresh kernel "
                 "(its state is gone)",
                 snapshot, err->message);
    else if (had)
        snprintf(s->lost, sizeof(s->lost),
                 chan ? "the sandbox was restored to snapshot %s: the kernel is the snapshot's "
                        "(its state as it was then)"
                      : "the sandbox was restored to snapshot %s, which had no code session: "
                        "this is a fresh kernel (its state is gone)",
                 snapshot);
    clr_utf8_trim_cut(s->lost);
    svc_code_session_give_or_free(s);
    return rc;
}
