/* The code interpreter (#21): one code session per sandbox, a Jupyter kernel behind a bridge
 * (lib/service/code_bridge.py) that runs inside the sandbox as a background command of the
 * sandbox's user and speaks JSON lines over its stdin and stdout. Cells of a sandbox run one at a
 * time, in the order they came; the bridge's lines are untrusted input (size caps, checked
 * fields), and a bridge that dies, lies or stops answering ends its session with a clear status,
 * never a hang: the next call starts a fresh one. */
#ifndef CLR_SERVICE_CODE_H
#define CLR_SERVICE_CODE_H

#include "service_int.h"

/* At stop: every bridge is killed, its thread joined, its session freed. */
void svc_code_stop(clr_service *svc);

/* Frees sessions whose bridge has ended, with no cell waiting, whose sandbox is no longer
 * running (the reaper calls it each pass). Returns how many were freed. */
size_t svc_code_prune(clr_service *svc);

/* Whether a cell runs or waits in the sandbox's code session (the reaper's idle check). */
bool svc_code_busy(clr_service *svc, const char *id);

/* The sandbox's code session's bridge on its live channel, as a snapshot records it beside its
 * background processes ({"code": true, "channel": N}), or NULL when no kernel runs there. */
json_t *svc_code_on_channel(clr_service *svc, const char *id);

/* After a fork or a restore in place of sandbox id (of tenant) from snapshot: the bridge the
 * agent runs on channel chan (the snapshot's kernel, with its state) becomes the sandbox's code
 * session, after the cells in flight, counted in the tenant's max_code_sessions ("code.adopt"
 * recorded). A kernel the sandbox ran before is ended, and its next cell says so (restarted,
 * with why). chan 0: the snapshot had no kernel; only that is done. -1 with err when it is not
 * taken (no room, the channel): the caller kills it. */
int svc_code_adopt(clr_service *svc, const char *id, const char *tenant, const char *snapshot,
                   uint32_t chan, const char *actor, clr_error *err);

/* Around a fork's or restore's adoption (from before its channel opens until svc_code_adopt
 * returned, or the fork or restore failed): a cell of sandbox id starts no kernel meanwhile
 * (503, "send the cell again"), so the adoption never waits behind a kernel's start. */
void svc_code_adopt_begin(const char *id);
void svc_code_adopt_end(const char *id);
/* Whether a fork or restore of sandbox id is between the two (code_adopting.c). */
bool svc_code_adopting(const char *id);

/* A JSON string's text, or dflt when v is not a string. */
static inline const char *svc_code_str_or(json_t *v, const char *dflt)
{
    const char *t = json_string_value(v);
    return t ? t : dflt;
}

/* The bridge's line reader (code_answer.c; exposed for the unit tests too): feeds len bytes of
 * the bridge's stdout to a reader (its complete lines are checked and queued). */
struct code_lines;
struct code_lines *svc_code_lines_new(size_t line_max);
void svc_code_lines_free(struct code_lines *r);
void svc_code_lines_feed(struct code_lines *r, const uint8_t *data, size_t len);
/* Output events ({"event": "stdout"|"stderr", "text"}) go to cb as their lines come (NULL: they
 * are dropped); they are never queued. Their texts together are held to cap (a cell's
 * output_cap, counted afresh from this call) as the bridge should have held them: a text cut
 * before the character that would cross it, one with nothing left dropped. A line then holds
 * at most cap / 2 + 4096 JSON values (no more than a sixteenth of line_max, with the slack),
 * the answers queued together as many; 4096 after a call with cap 0 (between cells). */
void svc_code_lines_on_event(struct code_lines *r, clr_service_event_cb cb, void *ctx,
                             uint64_t cap);
/* From now on every line is dropped (none is queued, none breaks the reader) until one that
 * holds nonce, itself dropped: an adopted bridge's output begins with its replayed past (old
 * answers, the first possibly cut mid-line), which ends where the bridge answers a sync request
 * carrying a fresh nonce. Drops what is queued and forgets a protocol error. */
void svc_code_lines_resync(struct code_lines *r, const char *nonce);
/* Whether the reader still waits for that line. */
bool svc_code_lines_resyncing(const struct code_lines *r);
/* Whether the cap of svc_code_lines_on_event cut or dropped a text since that call. */
bool svc_code_lines_truncated(const struct code_lines *r);
/* The next queued answer (caller owns it), or NULL; *broken (may be NULL) gets the reader's
 * protocol error, "" when none. */
json_t *svc_code_lines_take(struct code_lines *r, const char **broken);

/* The answer of a cell as the API gives it, from the bridge's line: only known fields of the
 * right types are kept (anything else is dropped), and their output is held to cap (the cell's
 * output_cap) again, as the bridge should have held it, whatever the bridge claims: stdout,
 * stderr, the result, the displays and the error's name, value and traceback together, in that
 * order (truncated true when anything was cut or dropped); message is bounded to 400 bytes.
 * NULL when the line is no result. The caller owns the answer. */
json_t *svc_code_answer(json_t *line, uint64_t cap);

/* When the sandbox id is no longer running (destroyed, lost, or its record gone), the answer a
 * cell gets whose bridge ended under it: status "sandbox_failed" (as an exec's command whose
 * sandbox is removed), a message naming the state and its reason (client, expired, idle, oom,
 * ...), restarted false; NULL while it runs (or its row cannot be read): the bridge's own
 * account stands. The caller owns the answer. */
json_t *svc_code_sandbox_gone(clr_service *svc, const char *id);

/* An answer the daemon makes itself (the bridge could not give one): status, no output, no
 * execution count, restarted and message as given. The caller owns it. */
json_t *svc_code_own_answer(const char *status, bool restarted, const char *message);

#endif
