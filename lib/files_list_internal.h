/* Files, metadata: the library's side of files_list.h (lib/files_list.c): the sorted names of a
 * directory, which extraction and archiving walk too. */
#ifndef CLR_FILES_LIST_INTERNAL_H
#define CLR_FILES_LIST_INTERNAL_H

#include <stddef.h>

#include "clearing/files_list.h"

/* Reads the names in dfd except "." and "..", sorted; -E2BIG when there are more than max,
 * -errno on another failure. On success *out is an array of *n malloc'd strings that the caller
 * frees with clr_files_free_names(); on failure nothing is returned. dfd keeps its offset. */
int clr_files_read_names(int dfd, size_t max, char ***out, size_t *n);
/* Frees what clr_files_read_names() returned. NULL is fine. */
void clr_files_free_names(char **v, size_t n);

#endif
