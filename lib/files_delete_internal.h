/* Files, deletion: the library's side of files_delete.h (lib/files_delete.c): emptying a
 * directory, which extraction uses to clear its staging directory. */
#ifndef CLR_FILES_DELETE_INTERNAL_H
#define CLR_FILES_DELETE_INTERNAL_H

#include "clearing/files_delete.h"

/* Deletes everything inside the directory fd, which it takes over (closes, also on failure),
 * descending at most CLR_FILES_DELETE_MAX_DEPTH levels below depth; links are unlinked, never
 * followed. rel names the directory in messages. 0, or -1 with err set. */
int clr_files_remove_contents(int fd, int depth, const char *rel, clr_error *err);

#endif
