/* The audit log reader: `clearing audit verify` reads files an attacker with write access to the
 * log may have edited, and the daemon reads the log's tail at start (cutting a torn last line).
 * Each input is a log file (on tmpfs); the first byte chooses allow_partial. A log that verifies
 * must still verify after the daemon opens it and appends a record. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "clearing/log.h"
#include "fuzz.h"

static char dir[] = "/dev/shm/clr-fuzz-audit-XXXXXX";
static char path[64];

/* The scratch directory goes when the run ends normally (not after a crash: kept to look at). */
static void cleanup(void)
{
    char lock[80];
    snprintf(lock, sizeof(lock), "%s.lock", path);
    unlink(path);
    unlink(lock);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    clr_log_set_level(CLR_LOG_ERROR);
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    atexit(cleanup);
    return 0;
}

static void verify(clr_audit_verify_report *r, bool partial)
{
    const char *files[] = {path};
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_verify(r, files, 1, partial, &err) < 0)
        abort(); /* the file is there: it can always be read */
    if (!memchr(r->problem, '\0', sizeof(r->problem)) || (!r->ok && !r->problem[0]))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool partial = data[0] & 1;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
        abort();
    close(fd);

    clr_audit_verify_report before;
    verify(&before, partial);

    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = path;
    o.rotate_bytes = 0;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_open(&a, &o, &err) == 0) {
        int rc = clr_audit_append(a, "fuzz", NULL, "fuzz.append", "ok", NULL, &err);
        clr_audit_close(a);
        clr_audit_verify_report after;
        verify(&after, partial);
        if (before.ok && (rc < 0 || !after.ok || after.records != before.records + 1)) {
            fprintf(stderr, "a log that verified was broken by open+append: %s\n",
                    after.problem);
            abort();
        }
    } else if (err.code == CLR_E_NONE) {
        abort();
    }
    return 0;
}
