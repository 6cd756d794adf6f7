/* Library-internal declarations shared between modules. */
#ifndef CLR_INTERNAL_H
#define CLR_INTERNAL_H

#include "clearing/clearing.h"
#include "clearing/cleanup.h"

/* s was cut at a byte count (snprintf into a fixed buffer, "%.200s"): drops a last UTF-8
 * character left incomplete, so the text can go into JSON. Text that was never UTF-8 stays as it
 * is. error.c, which cuts every error message this way. */
void clr_utf8_trim_cut(char *s);
/* The length of s's longest prefix of at most max bytes that ends on a whole UTF-8 character
 * (s is len bytes of UTF-8): where a text capped at max bytes is cut, before the character that
 * would cross the cap, never inside it. error.c. */
size_t clr_utf8_cut_len(const char *s, size_t len, size_t max);
/* src into dst (len > 0 bytes, cut there) with '?' for every byte that is not ASCII: the last
 * resort for a text that must go into JSON and is not UTF-8. error.c. */
void clr_text_ascii(char *dst, size_t len, const char *src);

/* What clr_sandbox_create checks before it makes anything (the runtime, the image, the agent),
 * for opts->in_place's sandbox: a restore in place runs it before it removes the old
 * container, so a pruned image or a missing agent refuses the restore instead of costing the
 * sandbox. sandbox.c. */
int clr_sandbox_check_in_place(clr_engine *eng, const clr_sandbox_options *opts, clr_error *err);

/* The uid/gid commands run as inside every sandbox. */
#define CLR_SANDBOX_UID 1000
#define CLR_SANDBOX_GID 1000
#define CLR_AGENT_TARGET "/opt/clearing/agent"
#define CLR_CONTAINER_PREFIX "clearing-"

/* Resolves the state directory: explicit, else $CLEARING_STATE_DIR, else the built-in one. */
const char *clr_state_dir(const char *explicit_dir);

/* Workspaces: <state_dir>/workspaces/<id>, a tmpfs of bounded size and inode count owned by
 * the sandbox user. */
int clr_workspace_path(char *out, size_t len, const char *state_dir, const char *id);
int clr_workspace_create(const char *state_dir, const char *id, const clr_limits *limits,
                         const char *copy_from, clr_error *err);
/* Unmounts and removes; succeeds when it is already gone. */
int clr_workspace_remove(const char *state_dir, const char *id, clr_error *err);

/* The bytes a command's process tree may hold, given the sandbox's memory limit: the rest is
 * kept for the agent and the gVisor kernel, so a memory bomb ends as an OOM result instead of
 * killing the sandbox. */
uint64_t clr_exec_memory_cap(uint64_t sandbox_memory);

/* The live channel's per-command side (channel.c, used by exec.c; channel.c is below exec.c
 * and never calls it: results are decoded by result.c). A slot receives the frames of
 * one channel id; slot_take returns 1 with a frame (free its payload with
 * clr_channel_frame_free), 0 when the channel ended and nothing is left, -2 on timeout. */
struct clr_channel_slot;
/* Gives an open channel other hooks (a pooled sandbox's channel, opened before the sandbox
 * had a record, once it is handed out). */
void clr_channel_set_hooks(clr_channel *ch, const clr_channel_hooks *hooks);
/* A fresh command id for a channel (random, never 0). */
uint32_t clr_channel_new_id(void);
struct clr_channel_slot *clr_channel_slot_new(clr_channel *ch, uint32_t want, clr_error *err);
/* The slot of a command that already runs (one a fork or restore brought back): its output
 * collected since the channel opened, nobody having waited for it, is queued on the slot first,
 * and what comes after goes there too. id is the command's, not 0. */
struct clr_channel_slot *clr_channel_slot_claim(clr_channel *ch, uint32_t id, clr_error *err);
/* Lets go of a result held for a claim that will not come (the command was not taken over): it
 * is freed and acknowledged. Nothing held for id: nothing done. */
void clr_channel_release(clr_channel *ch, uint32_t id);
uint32_t clr_channel_slot_id(const struct clr_channel_slot *s);
/* Bounds the output queued for the slot's reader to max bytes (0: no bound); output past it
 * is dropped, and slot_dropped says from which stream. */
void clr_channel_slot_bound(clr_channel *ch, struct clr_channel_slot *s, uint64_t max);
void clr_channel_slot_dropped(clr_channel *ch, struct clr_channel_slot *s, bool *out, bool *err);
void clr_channel_slot_free(clr_channel *ch, struct clr_channel_slot *s);
int clr_channel_slot_take(clr_channel *ch, struct clr_channel_slot *s, int timeout_ms,
                          uint8_t *type, uint8_t **payload, uint32_t *len, bool *protocol_error);
void clr_channel_frame_free(uint8_t *payload);
int clr_channel_send(clr_channel *ch, uint32_t id, uint8_t type, const void *data, size_t len,
                     clr_error *err);
void clr_channel_ack(clr_channel *ch, uint32_t id);
/* For the fuzzers: a channel without a stream (sends fail), and the reader thread's handling of
 * stream bytes (demultiplexer, frames, dispatch to slots and hooks); -1 when the bytes break
 * the protocol, which ends the channel. Free with clr_channel_unref(). */
clr_channel *clr_channel_new_detached(const clr_channel_hooks *hooks);
int clr_channel_feed(clr_channel *ch, const uint8_t *data, size_t len);
/* For tests (tests/unit/test_channel.c): a channel over a connected socket instead of the
 * engine's attach stream, carrying the same bytes (the engine's multiplexed stream in, raw
 * frames out). As clr_channel_open, with the same HELLO handshake; fd is the channel's from
 * here on, also on failure. *out: clr_channel_close(). */
int clr_channel_open_fd(clr_channel **out, int fd, const char *sandbox_id,
                        const clr_channel_hooks *hooks, clr_error *err);
/* The payload of a NET_OPEN frame ("C"|"H", NUL, host, NUL, decimal port): 0, or -1 when it is
 * malformed. */
int clr_egress_parse_open(const uint8_t *payload, uint32_t len, bool *tunnel, char *host,
                          size_t hostlen, unsigned *port);

/* clr_runtime_version (the runtime binary's --version) is public: clearing/engine.h. */

/* The SHA-256 of len bytes at data, as 64 lowercase hex digits and a NUL (lib/verdict.c). */
void clr_sha256_hex(char out[65], const void *data, size_t len);

/* Appends at most what keeps b within cap bytes (NUL-terminated after); returns how many bytes
 * were kept, -1 when out of memory. */
ssize_t clr_buffer_append_capped(clr_buffer *b, const uint8_t *data, size_t len, uint64_t cap);

/* Checks a request body as the daemon does before it touches a sandbox or its database: kind is
 * "create", "exec", "process", "extend", "stdin", "signal", "commit" or "plan". Whether a
 * repository is under repo_roots is not checked. For the fuzzers (fuzz/fuzz_api_request.c). */
int clr_service_check_request(const char *kind, json_t *req, clr_error *err);

#endif
