/* Scope-owned libarchive objects: `_cleanup_archive_read_ struct archive *a = archive_read_new();`
 * is freed on every return path; steal_pointer (&a) hands it on. */
#ifndef CLR_CLEANUP_ARCHIVE_H
#define CLR_CLEANUP_ARCHIVE_H

#include <archive.h>
#include <archive_entry.h>

#include "clearing/cleanup.h"

CLR_DEFINE_CLEANUP(struct archive *, archive_read_free)
CLR_DEFINE_CLEANUP(struct archive *, archive_write_free)
CLR_DEFINE_CLEANUP(struct archive_entry *, archive_entry_free)

#define _cleanup_archive_read_ __attribute__((cleanup(archive_read_freep)))
#define _cleanup_archive_write_ __attribute__((cleanup(archive_write_freep)))
#define _cleanup_archive_entry_ __attribute__((cleanup(archive_entry_freep)))

#endif
