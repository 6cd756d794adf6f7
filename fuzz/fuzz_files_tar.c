/* Tar archives uploaded to a workspace (PUT /v1/sandboxes/ID/archive, `clearing cp`): extracted
 * for real into a scratch directory on tmpfs with small limits. Whatever the archive, nothing may
 * land outside the target directory and no staging directory may be left behind. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clearing/files.h"
#include "fuzz.h"

static int root = -1;
static int input = -1;
static char scratch[] = "/dev/shm/clr-fuzz-tar-XXXXXX";

/* The scratch directory goes when the run ends normally (not after a crash: kept to look at). */
static void cleanup(void)
{
    clr_error err = CLR_ERROR_INIT;
    clr_files_delete(root, "x", true, &err);
    rmdir(scratch);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    clr_error err = CLR_ERROR_INIT;
    if (!mkdtemp(scratch) || clr_files_open_root(&root, scratch, &err) < 0) {
        fprintf(stderr, "fuzz_files_tar: cannot make a scratch root %s: %s\n", scratch,
                err.message);
        abort();
    }
    input = memfd_create("tar", MFD_CLOEXEC);
    if (input < 0)
        abort();
    fprintf(stderr, "fuzz_files_tar: scratch root %s\n", scratch);
    atexit(cleanup);
    return 0;
}

/* Names in dir other than keep: an entry that escaped the target, or a leftover. */
static int stray_entries(const char *dir, const char *keep)
{
    int fd = openat(root, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0; /* "x" is made only when extraction got that far */
    DIR *d = fdopendir(fd);
    if (!d)
        abort();
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, keep)) {
            fprintf(stderr, "stray entry in %s: %s\n", dir, e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(input, 0) < 0 || pwrite(input, data, size, 0) != (ssize_t)size ||
        lseek(input, 0, SEEK_SET) < 0)
        abort();
    clr_files_limits lim = {.max_file_bytes = 1 << 20, .max_total_bytes = 4 << 20,
                            .max_entries = 64, .max_depth = 8};
    clr_files_report report;
    clr_error err = CLR_ERROR_INIT;
    /* "x/in": a target two levels down, so a climb out of it by one or two levels is seen. */
    int rc = clr_files_extract_tar(root, "x/in", input, &lim, &report, &err);
    if (rc < 0 && err.code == CLR_E_NONE)
        abort();
    if (stray_entries(".", "x") || stray_entries("x", "in"))
        abort();
    /* All or nothing: a refused archive leaves the (empty) target empty, staging included. */
    if (rc < 0 && stray_entries("x/in", "")) {
        fprintf(stderr, "refused (%s) but the target is not empty\n", err.message);
        abort();
    }
    clr_error derr = CLR_ERROR_INIT;
    if (clr_files_delete(root, "x", true, &derr) < 0 && derr.code != CLR_E_NOT_FOUND) {
        fprintf(stderr, "cannot clean up: %s\n", derr.message);
        abort();
    }
    return 0;
}
