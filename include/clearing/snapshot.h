/* Snapshots on disk (issue #22): one directory per snapshot under the state directory,
 * <state>/snapshots/<id>/, root-only (0700), holding
 *   checkpoint/     the engine's checkpoint of the sandbox (gVisor's memory: its processes, /tmp)
 *   workspace/      a copy of the workspace (a host bind mount: not in the checkpoint)
 *   manifest.json   every file and directory below with its type, mode, size and sha256
 * The manifest is written last (a temporary name, fsync, rename): a directory without one is a
 * snapshot that was never finished, and the daemon's recovery removes it. Before anything is
 * restored from a snapshot the whole directory is checked against its manifest, and the
 * manifest against the sha256 the daemon recorded for it: a corrupt, truncated or grown snapshot
 * is refused (CLR_E_CONFLICT, naming the file) and nothing is restored from it. */
#ifndef CLEARING_SNAPSHOT_H
#define CLEARING_SNAPSHOT_H

#include <stdint.h>

#include "common.h"

/* The most files and directories a snapshot lists (its manifest must stay readable). */
#define CLR_SNAPSHOT_MAX_ENTRIES 200000

/* The name a snapshot's checkpoint has in the engine while a container starts from it. */
#define CLR_SNAPSHOT_CHECKPOINT "clearing-restore"

/* A snapshot id is "snap-" and 16 lower-case hex digits. */
CLR_PUBLIC bool clr_snapshot_id_valid(const char *id);
/* A new random snapshot id into out (at least 22 bytes). */
CLR_PUBLIC int clr_snapshot_id_new(char *out, size_t len, clr_error *err);

/* <state>/snapshots/<id> (state_dir NULL: the default state directory). */
CLR_PUBLIC int clr_snapshot_path(char *out, size_t len, const char *state_dir, const char *id);

/* Writes the snapshot directory dir (its parent is created 0700 if missing; dir itself must not
 * exist): checkpoint_src's files (a flat directory, the engine's checkpoint) into checkpoint/,
 * workspace's tree into workspace/ (regular files, directories and symbolic links, never
 * followed; other kinds are left out as the workspace copy-in does), then manifest.json. *size is
 * the bytes of all its files; manifest_sha256 (65 bytes) the manifest's hex sha256, for the
 * daemon's row and the audit record. On failure nothing of dir is left.
 * The sandbox runs on while its workspace is copied, so what it holds is adversarial: the copy
 * stops with CLR_E_LIMIT before it would pass max_bytes in all (a sparse or hard-linked file
 * counts in full) or CLR_SNAPSHOT_MAX_ENTRIES entries; a file is copied up to the size it had when
 * opened; a file swapped for another kind (a FIFO) between stat and open is CLR_E_CONFLICT. */
CLR_PUBLIC int clr_snapshot_write(const char *dir, const char *checkpoint_src,
                                  const char *workspace, uint64_t max_bytes, uint64_t *size,
                                  char *manifest_sha256, clr_error *err);

/* Checks dir against its manifest (and the manifest against expect_sha256 unless NULL): every
 * listed file present with its size and sha256, nothing unlisted. CLR_E_CONFLICT naming what is
 * wrong. */
CLR_PUBLIC int clr_snapshot_verify(const char *dir, const char *expect_sha256, clr_error *err);

/* Copies dir's checkpoint/ files into dest (created 0700 with its parents; must not hold files of
 * the same name): where the engine reads a checkpoint to start from. */
CLR_PUBLIC int clr_snapshot_copy_checkpoint(const char *dir, const char *dest, clr_error *err);

/* dir's workspace copy (dir/workspace), for clr_workspace_create's copy_from. */
CLR_PUBLIC int clr_snapshot_workspace_path(char *out, size_t len, const char *dir);

/* Removes a snapshot directory (or any directory tree: a checkpoint copied for a start) and all
 * below it. A missing one is not an error. */
CLR_PUBLIC int clr_snapshot_remove_dir(const char *dir, clr_error *err);

/* Whether dir holds a finished snapshot (its manifest.json exists). */
CLR_PUBLIC bool clr_snapshot_finished(const char *dir);

/* Gives each file and directory of dest (a fork's workspace copied from dir's workspace/, whose
 * files are 0600 and directories 0700) the mode dir's manifest records for it, masked with 0777
 * (never setuid, setgid or sticky). No symbolic link is followed. */
CLR_PUBLIC int clr_snapshot_apply_modes(const char *dir, const char *dest, clr_error *err);

#endif
