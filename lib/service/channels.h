/* Live channels: per running sandbox, its opened handle and its agent's channel (svc->live,
 * under live_lock), reference-counted, so an exec is one frame on an open stream. Also the
 * channel's hooks: replayed results, lost commands, egress frames. */
#ifndef CLR_SERVICE_CHANNELS_H
#define CLR_SERVICE_CHANNELS_H

#include "service_int.h"

/* The registry's link to the sandbox's entry (*result NULL: none). live_lock held. */
struct live_sb **svc_live_find_locked(clr_service *svc, const char *id);

/* Drops a reference taken by svc_live_new or svc_live_get (NULL: nothing); the last one closes
 * the channel and frees the sandbox handle. */
void svc_live_put(clr_service *svc, struct live_sb *lv);

/* The live state of a running sandbox, made from its handle and, when the caller has one, its
 * attached channel (a pooled sandbox's; NULL: attached here), both taken over whatever the
 * outcome, and registered. */
int svc_live_new(clr_service *svc, clr_engine *eng, const char *id, clr_sandbox *sb,
                 clr_channel *ch, struct live_sb **out, clr_error *err);

/* The sandbox, opened, with its live channel when its agent serves one. *out holds a reference
 * (svc_live_put). A channel that ended (dockerd restarted, the sandbox stopped) is opened again.
 * eng is the caller's, used only during the call. */
int svc_live_get(clr_service *svc, clr_engine *eng, const char *id, struct live_sb **out,
                 clr_error *err);

/* Kills (KILL frame) every command its agent named at the channel's open that has no exec
 * record of the sandbox: a background process of a daemon that died (this daemon knows none),
 * or one a fork inherited, whose result nobody would read. Recorded ("sandbox.orphans_killed",
 * actor "recovery", the channels and why). Returns how many were sent the kill. */
int svc_live_end_orphans(clr_service *svc, struct live_sb *lv, const char *why);

/* Until svc_live_unhold(id): results sandbox id's agent replays for the channels chans (n of
 * them) are held on its channel for whoever claims them (clr_exec_adopt), not stored as an exec
 * record's nor acknowledged; set before the channel opens (a fork's or restore's, whose
 * snapshot's background processes are about to be taken over). Out of memory: nothing held. */
void svc_live_hold(const char *id, const uint32_t *chans, size_t n);
void svc_live_unhold(const char *id);

/* The sandbox is gone for its callers: the registry lets go of it; its channel closes once no
 * command holds it (a background process holds it until its container goes). */
void svc_live_drop(clr_service *svc, const char *id);

#endif
